package main

// Availability figures of one run.
//
// - Throughput: successful workload operations per second, bucketed by end time.
// - Baseline: the median per-second throughput over quiet seconds: from 1 s after the
//   start to the first fault, and from 3 s after each fault was healed to the next
//   fault (or the end).
// - A fault's window runs from its start to the next fault's start (or the end of the
//   run), so it includes the recovery and any disruption the heal itself causes (a
//   rejoining member, a restarted one catching up).
// - Recovery time of a fault: from its start to the start of the last stretch, within
//   its window, over which every 1-second sliding window (100 ms steps) has at least
//   80% of the baseline. 0 means throughput never dropped below 80%; -1 (shown
//   "none") means it was still below at the end of the window.

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

type KindStat struct {
	Count        int     `json:"count"`
	WindowSec    float64 `json:"window_s"`
	WindowOk     int     `json:"window_ok"`
	DuringSec    float64 `json:"during_s"`
	DuringOk     int     `json:"during_ok"`
	Errors       int     `json:"errors"`
	RecSum       float64 `json:"recovery_sum_s"`
	RecFirstSum  float64 `json:"recovery_first_sum_s"`
	RecMax       float64 `json:"recovery_max_s"`
	NotRecovered int     `json:"not_recovered"`
}

func (k *KindStat) add(o *KindStat) {
	k.Count += o.Count
	k.WindowSec += o.WindowSec
	k.WindowOk += o.WindowOk
	k.DuringSec += o.DuringSec
	k.DuringOk += o.DuringOk
	k.Errors += o.Errors
	k.RecSum += o.RecSum
	k.RecFirstSum += o.RecFirstSum
	if o.RecMax > k.RecMax {
		k.RecMax = o.RecMax
	}
	k.NotRecovered += o.NotRecovered
}

func (k *KindStat) WindowRate() float64 { return ratio(float64(k.WindowOk), k.WindowSec) }
func (k *KindStat) DuringRate() float64 { return ratio(float64(k.DuringOk), k.DuringSec) }
func (k *KindStat) MeanRec() float64    { return ratio(k.RecSum, float64(k.Count-k.NotRecovered)) }
func (k *KindStat) MeanFirst() float64  { return ratio(k.RecFirstSum, float64(k.Count)) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

type FaultStat struct {
	DuringOk  int     `json:"during_ok"`
	WindowOk  int     `json:"window_ok"`
	Errors    int     `json:"window_errors"`
	MinPerSec int     `json:"min_1s_window"`
	Recovery  float64 `json:"recovery_s"`
	RecFirst  float64 `json:"recovery_first_s"`
}

type RunResult struct {
	Server     string               `json:"server"`
	Seed       int64                `json:"seed"`
	Kinds      []string             `json:"kinds"`
	Duration   float64              `json:"duration_s"`
	Dir        string               `json:"dir"`
	Members    []string             `json:"members"`
	PerSecOk   []int                `json:"per_second_ok"`
	PerSecErr  []int                `json:"per_second_errors"`
	TotalOk    int                  `json:"total_ok"`
	TotalErr   int                  `json:"total_errors"`
	Baseline   float64              `json:"baseline_ops_per_s"`
	Faults     []Fault              `json:"faults"`
	FaultStats []FaultStat          `json:"fault_stats"`
	ByKind     map[string]*KindStat `json:"by_kind"`
	LinOk      bool                 `json:"linearizable"`
	LinUnknown int                  `json:"lin_unknown_keys"`
	LinDetail  []string             `json:"lin_detail,omitempty"`
	Lost       []string             `json:"lost_writes,omitempty"`
	Converge   string               `json:"convergence"`
	Problems   []string             `json:"problems,omitempty"`
	TopErrors  []string             `json:"top_errors"`
}

func (r *RunResult) OkRate() float64 { return ratio(float64(r.TotalOk), r.Duration) }

func median(xs []int) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]int(nil), xs...)
	sort.Ints(s)
	if len(s)%2 == 1 {
		return float64(s[len(s)/2])
	}
	return float64(s[len(s)/2-1]+s[len(s)/2]) / 2
}

func normErr(e string) string {
	if i := strings.Index(e, "desc = "); i >= 0 {
		e = e[i+7:]
	}
	if len(e) > 90 {
		e = e[:90]
	}
	return e
}

// Analyze fills the throughput figures of r from the workload ops.
func (r *RunResult) Analyze(ops []Op, faults []Fault, dur time.Duration) {
	n := int(dur.Seconds() + 0.999)
	r.Duration = dur.Seconds()
	r.PerSecOk, r.PerSecErr = make([]int, n), make([]int, n)
	var okEnds []int64
	errCount := map[string]int{}
	for _, o := range ops {
		s := int(o.End / 1e6)
		if s >= n {
			s = n - 1
		}
		if o.Ok {
			r.PerSecOk[s]++
			r.TotalOk++
			okEnds = append(okEnds, o.End)
		} else {
			r.PerSecErr[s]++
			r.TotalErr++
			errCount[o.Kind+": "+normErr(o.Err)]++
		}
	}
	sort.Slice(okEnds, func(i, j int) bool { return okEnds[i] < okEnds[j] })
	type kv struct {
		k string
		v int
	}
	var es []kv
	for k, v := range errCount {
		es = append(es, kv{k, v})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].v > es[j].v })
	for i := 0; i < len(es) && i < 8; i++ {
		r.TopErrors = append(r.TopErrors, fmt.Sprintf("%6d  %s", es[i].v, es[i].k))
	}

	// quiet seconds -> baseline
	type iv struct{ a, b float64 }
	var quiet []iv
	var applied []*Fault
	for i := range faults {
		if faults[i].Skipped == "" {
			applied = append(applied, &faults[i])
		}
	}
	from := 1.0
	for _, f := range applied {
		quiet = append(quiet, iv{from, f.Start})
		from = f.End + 3
	}
	quiet = append(quiet, iv{from, r.Duration})
	var qs []int
	for s := 0; s < n; s++ {
		for _, q := range quiet {
			if float64(s) >= q.a && float64(s+1) <= q.b {
				qs = append(qs, r.PerSecOk[s])
				break
			}
		}
	}
	if len(qs) == 0 {
		qs = r.PerSecOk
	}
	r.Baseline = median(qs)

	count := func(a, b float64) int { // ok ops ending in [a, b) seconds
		lo := sort.Search(len(okEnds), func(i int) bool { return okEnds[i] >= int64(a*1e6) })
		hi := sort.Search(len(okEnds), func(i int) bool { return okEnds[i] >= int64(b*1e6) })
		return hi - lo
	}
	r.ByKind = map[string]*KindStat{}
	r.FaultStats = make([]FaultStat, len(faults))
	for i := range faults {
		f := &faults[i]
		f.NextAt = r.Duration
		for j := i + 1; j < len(faults); j++ {
			if faults[j].Skipped == "" {
				f.NextAt = faults[j].Start
				break
			}
		}
		if f.Skipped != "" {
			continue
		}
		fs := &r.FaultStats[i]
		fs.DuringOk = count(f.Start, f.End)
		fs.WindowOk = count(f.Start, f.NextAt)
		for _, o := range ops {
			if !o.Ok && float64(o.End)/1e6 >= f.Start && float64(o.End)/1e6 < f.NextAt {
				fs.Errors++
			}
		}
		thr := 0.8 * r.Baseline
		lastFail, firstFail := -1.0, -1.0
		fs.MinPerSec = -1
		fs.RecFirst = -1
		for t := f.Start; t+1 <= f.NextAt; t += 0.1 {
			w := count(t, t+1)
			if fs.MinPerSec < 0 || w < fs.MinPerSec {
				fs.MinPerSec = w
			}
			if float64(w) < thr {
				lastFail = t
				if firstFail < 0 {
					firstFail = t
				}
			} else if fs.RecFirst < 0 && firstFail >= 0 {
				fs.RecFirst = t - f.Start
			}
		}
		if firstFail < 0 {
			fs.RecFirst = 0
		} else if fs.RecFirst < 0 {
			fs.RecFirst = f.NextAt - f.Start
		}
		switch {
		case lastFail < 0:
			fs.Recovery = 0
		case lastFail+0.1+1 > f.NextAt:
			fs.Recovery = -1
		default:
			fs.Recovery = lastFail + 0.1 - f.Start
		}
		f.Recovery = fs.Recovery
		k := r.ByKind[f.Kind]
		if k == nil {
			k = &KindStat{}
			r.ByKind[f.Kind] = k
		}
		k.Count++
		k.WindowSec += f.NextAt - f.Start
		k.WindowOk += fs.WindowOk
		k.DuringSec += f.End - f.Start
		k.DuringOk += fs.DuringOk
		k.Errors += fs.Errors
		k.RecFirstSum += fs.RecFirst
		if fs.Recovery < 0 {
			k.NotRecovered++
		} else {
			k.RecSum += fs.Recovery
			if fs.Recovery > k.RecMax {
				k.RecMax = fs.Recovery
			}
		}
	}
	r.Faults = faults
}

func recStr(x float64) string {
	if x < 0 {
		return "none"
	}
	return fmt.Sprintf("%.1fs", x)
}

func (r *RunResult) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server %s, seed %d, faults %s, %.0fs; logs and history in %s\n", r.Server, r.Seed, strings.Join(r.Kinds, ","), r.Duration, r.Dir)
	fmt.Fprintf(&b, "members: %s\n", strings.Join(r.Members, "  "))
	fmt.Fprintf(&b, "successful ops: %d (%.0f/s), errors: %d, baseline (median of quiet seconds): %.0f ops/s\n",
		r.TotalOk, r.OkRate(), r.TotalErr, r.Baseline)
	lin := "linearizable"
	if !r.LinOk {
		lin = "NOT LINEARIZABLE"
	}
	if r.LinUnknown > 0 {
		lin += fmt.Sprintf(" (%d keys undecided)", r.LinUnknown)
	}
	lost := "no acknowledged write lost"
	if len(r.Lost) > 0 {
		lost = fmt.Sprintf("%d LOST WRITES", len(r.Lost))
	}
	fmt.Fprintf(&b, "history: %s; %s; members converged: %s\n", lin, lost, r.Converge)
	for _, d := range r.LinDetail {
		fmt.Fprintf(&b, "  %s\n", strings.ReplaceAll(d, "\n", "\n  "))
	}
	for _, d := range r.Lost {
		fmt.Fprintf(&b, "  lost: %s\n", d)
	}
	for _, d := range r.Problems {
		fmt.Fprintf(&b, "  problem: %s\n", d)
	}
	fmt.Fprintf(&b, "\n%-3s %-15s %-22s %8s %5s %7s %9s %9s %6s %6s %8s %8s\n", "#", "fault", "target", "start", "dur", "window", "ok/s in", "ok/s win", "errs", "min1s", "rec-1st", "stable")
	for i, f := range r.Faults {
		if f.Skipped != "" {
			fmt.Fprintf(&b, "%-3d %-15s skipped: %s\n", i+1, f.Kind, f.Skipped)
			continue
		}
		s := r.FaultStats[i]
		fmt.Fprintf(&b, "%-3d %-15s %-22s %7.2fs %4.1fs %6.1fs %9.0f %9.0f %6d %6d %7.1fs %8s\n", i+1, f.Kind,
			fmt.Sprintf("%s %s (%s)", f.Target, f.TargetID[:min(6, len(f.TargetID))], f.Role), f.Start, f.End-f.Start, f.NextAt-f.Start,
			ratio(float64(s.DuringOk), f.End-f.Start), ratio(float64(s.WindowOk), f.NextAt-f.Start), s.Errors, s.MinPerSec, s.RecFirst, recStr(s.Recovery))
	}
	fmt.Fprintf(&b, "\nper kind: %-15s %5s %10s %10s %7s %9s %9s %9s\n", "", "count", "ok/s in", "ok/s win", "errors", "rec-1st", "stable", "max stbl")
	for _, k := range kindOrder(r.ByKind) {
		s := r.ByKind[k]
		nr := ""
		if s.NotRecovered > 0 {
			nr = fmt.Sprintf("  (%d not recovered)", s.NotRecovered)
		}
		fmt.Fprintf(&b, "          %-15s %5d %10.0f %10.0f %7d %8.1fs %8.1fs %8.1fs%s\n", k, s.Count, s.DuringRate(), s.WindowRate(), s.Errors, s.MeanFirst(), s.MeanRec(), s.RecMax, nr)
	}
	b.WriteString("\ntop errors (op: message):\n")
	for _, e := range r.TopErrors {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	b.WriteString("\nper second:  sec    ok  errors  fault\n")
	for s := range r.PerSecOk {
		active := ""
		for _, f := range r.Faults {
			if f.Skipped == "" && float64(s+1) > f.Start && float64(s) < f.End {
				active = f.Kind + " " + f.Target
			}
		}
		fmt.Fprintf(&b, "            %4d %5d %7d  %s\n", s, r.PerSecOk[s], r.PerSecErr[s], active)
	}
	return b.String()
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func kindOrder(m map[string]*KindStat) []string {
	var ks []string
	for _, k := range allKinds {
		if _, ok := m[k]; ok {
			ks = append(ks, k)
		}
	}
	return ks
}
