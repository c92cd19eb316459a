package main

// The fault schedule: drawn up front from the seed alone, so both servers get the
// same kinds, times, durations and target choices. One fault at a time: after a
// warm-up, a fault lasts 2-5 s, then the cluster gets `gap` fault-free seconds before
// the next one.

import (
	"context"
	"fmt"
	"math/rand"
	"time"
)

type Fault struct {
	Kind   string        `json:"kind"`
	At     time.Duration `json:"-"`
	Dur    time.Duration `json:"-"`
	Choice int           `json:"-"` // kill/partition: member index; pause-follower: which follower

	// filled in when applied
	Target   string  `json:"target"`            // member name
	TargetID string  `json:"target_id"`         // hex member ID
	Role     string  `json:"role"`              // leader | follower | unknown, when applied
	Start    float64 `json:"start_s"`           // seconds since the workload started
	End      float64 `json:"end_s"`             // when healed (restart / SIGCONT / rules removed)
	Wall     string  `json:"wall"`              // wall-clock start, to find it in the logs
	Skipped  string  `json:"skipped,omitempty"` // why it was not applied
	NextAt   float64 `json:"window_end_s"`      // start of the next fault or end of the run
	Recovery float64 `json:"recovery_s"`        // see report.go; -1: not recovered in the window
}

var allKinds = []string{"kill", "pause-leader", "pause-follower", "partition"}

const faultGap = 6 * time.Second

func warmup(d time.Duration) time.Duration {
	if d >= 30*time.Second {
		return 5 * time.Second
	}
	return 3 * time.Second
}

func Schedule(seed int64, kinds []string, duration time.Duration) []Fault {
	rng := rand.New(rand.NewSource(seed))
	var fs []Fault
	if len(kinds) == 0 {
		return nil
	}
	t := warmup(duration)
	minTail := 4 * time.Second
	for {
		kind := kinds[rng.Intn(len(kinds))]
		dur := 2*time.Second + time.Duration(rng.Intn(31))*100*time.Millisecond
		choice := rng.Intn(3)
		if room := duration - minTail - t; dur > room {
			if room < time.Second {
				break
			}
			dur = room
		}
		fs = append(fs, Fault{Kind: kind, At: t, Dur: dur, Choice: choice})
		t += dur + faultGap
	}
	return fs
}

func roleOf(c *Cluster, m *Member, leader *Member) string {
	switch {
	case leader == nil:
		return "unknown"
	case leader == m:
		return "leader"
	default:
		return "follower"
	}
}

// Inject applies the schedule (blocking until the last fault is healed or ctx ends).
func Inject(ctx context.Context, c *Cluster, fs []Fault, t0 time.Time, logf func(string, ...interface{})) {
	for i := range fs {
		f := &fs[i]
		if d := time.Until(t0.Add(f.At)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		}
		leader := c.Leader()
		if leader == nil && (f.Kind == "pause-leader" || f.Kind == "pause-follower") {
			leader = c.WaitLeader(2 * time.Second)
		}
		var target *Member
		switch f.Kind {
		case "kill", "partition":
			target = c.Members[f.Choice]
		case "pause-leader":
			target = leader
		case "pause-follower":
			if leader != nil {
				var fol []*Member
				for _, m := range c.Members {
					if m != leader {
						fol = append(fol, m)
					}
				}
				target = fol[f.Choice%2]
			}
		}
		f.Wall = time.Now().Format("2006-01-02 15:04:05.000")
		f.Start = time.Since(t0).Seconds()
		if target == nil {
			f.Skipped = "no leader found within 2 s"
			f.End = f.Start
			logf("t=%6.2fs  %-14s skipped: %s", f.Start, f.Kind, f.Skipped)
			continue
		}
		f.Target, f.TargetID, f.Role = target.Name, fmt.Sprintf("%x", target.ID), roleOf(c, target, leader)
		logf("t=%6.2fs  %-14s %s (%s, %s) for %.1fs", f.Start, f.Kind, target.Name, f.TargetID, f.Role, f.Dur.Seconds())
		switch f.Kind {
		case "kill":
			c.Kill(target)
		case "pause-leader", "pause-follower":
			c.Pause(target)
		case "partition":
			if err := c.Partition(target); err != nil {
				logf("partition failed: %v", err)
			}
		}
		select {
		case <-time.After(f.Dur):
		case <-ctx.Done():
		}
		switch f.Kind {
		case "kill":
			if err := c.Start(target, "restart after kill -9"); err != nil {
				logf("restart of %s failed: %v", target.Name, err)
			}
		case "pause-leader", "pause-follower":
			c.Resume(target)
		case "partition":
			if err := c.Heal(); err != nil {
				logf("heal failed: %v", err)
			}
		}
		f.End = time.Since(t0).Seconds()
		if ctx.Err() != nil {
			return
		}
	}
}
