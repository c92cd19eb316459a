package main

// Linearizability of a history, key by key (each key is an independent register, so
// the history is linearizable iff every key's is). The search is Wing & Gong's, with
// Lowe's memoization as in Porcupine: walk the time-ordered list of call and return
// events, linearize a pending call whose effect fits the register's state, back
// track when a return is reached whose operation was not linearized, and never
// revisit a (set of linearized ops, state) pair. The set is kept as a 128-bit
// Zobrist hash (random bits per op XORed in and out), so the cache costs 16 bytes a
// state whatever the history's length.
//
// Operations that ended in an error or timeout may or may not have taken effect:
//   - a failed get has no effect and observes nothing: dropped;
//   - a failed put/cas wrote a value no other op writes (values are unique). If no
//     operation that certainly happened observed that value (read it, or swapped
//     expecting it), the write can be dropped: any linearization containing it stays
//     one without it, since nothing in it depends on the value. Otherwise it certainly
//     happened (a cas then certainly swapped), before every observer's linearization
//     point, so its end is tightened to the earliest observer's end and it becomes an
//     ordinary operation. Repeated to a fixed point (an op made certain observes too).

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"time"
)

type lop struct {
	kind    byte // 'p' put, 'g' get, 'c' cas
	in      string
	exp     string
	out     string
	swapped bool
	start   int64
	end     int64
	orig    *Op
	maybe   bool
	za, zb  uint64
}

func (o *lop) step(state string) (bool, string) {
	switch o.kind {
	case 'p':
		return true, o.in
	case 'g':
		return state == o.out, state
	default:
		if o.swapped {
			return state == o.exp, o.in
		}
		return state == o.out && state != o.exp, state
	}
}

func (o *lop) String() string {
	end := fmt.Sprintf("%.6f", float64(o.end)/1e6)
	if o.maybe {
		end += "(tightened)"
	}
	tag := ""
	if o.orig != nil {
		tag = fmt.Sprintf("client %d ", o.orig.Client)
		if o.orig.Err != "" {
			tag += fmt.Sprintf("[error %q] ", o.orig.Err)
		}
	}
	t := fmt.Sprintf("[%.6f, %s] %s", float64(o.start)/1e6, end, tag)
	switch o.kind {
	case 'p':
		return t + fmt.Sprintf("put %q", o.in)
	case 'g':
		return t + fmt.Sprintf("get -> %q", o.out)
	default:
		if o.swapped {
			return t + fmt.Sprintf("cas %q -> %q swapped", o.exp, o.in)
		}
		return t + fmt.Sprintf("cas %q -> %q failed, read %q", o.exp, o.in, o.out)
	}
}

// prepare turns one key's history into the checker's ops (see the header comment).
// It returns an error when a value is observed before its write was invoked.
func prepare(hist []Op) ([]*lop, error) {
	var sure, maybe []*lop
	for i := range hist {
		h := &hist[i]
		o := &lop{in: h.In, exp: h.Exp, out: h.Out, swapped: h.Swapped, start: h.Start, end: h.End, orig: h}
		switch h.Kind {
		case "put":
			o.kind = 'p'
		case "get":
			o.kind = 'g'
		default:
			o.kind = 'c'
		}
		if h.Ok {
			sure = append(sure, o)
		} else if o.kind != 'g' {
			o.maybe = true
			maybe = append(maybe, o)
		}
	}
	// observedBy[v] = earliest end of a certain op that observed v
	for changed := true; changed; {
		changed = false
		earliest := map[string]int64{}
		note := func(v string, end int64) {
			if e, ok := earliest[v]; !ok || end < e {
				earliest[v] = end
			}
		}
		for _, o := range sure {
			switch {
			case o.kind == 'g' || (o.kind == 'c' && !o.swapped):
				if o.out != "" {
					note(o.out, o.end)
				}
			case o.kind == 'c' && o.swapped && o.exp != "":
				note(o.exp, o.end)
			}
		}
		var rest []*lop
		for _, o := range maybe {
			e, ok := earliest[o.in]
			if !ok {
				rest = append(rest, o)
				continue
			}
			o.end = e
			if o.kind == 'c' {
				o.swapped = true
			}
			sure = append(sure, o)
			changed = true
		}
		maybe = rest
		// tighten ends of certain maybe-ops again (observers' ends may have dropped)
		for _, o := range sure {
			if o.maybe {
				if e, ok := earliest[o.in]; ok && e < o.end {
					o.end = e
					changed = true
				}
			}
		}
	}
	for _, o := range sure {
		if o.end < o.start {
			return nil, fmt.Errorf("value %q observed at %.6fs, before its write %s was invoked", o.in, float64(o.end)/1e6, o)
		}
	}
	return sure, nil
}

type event struct {
	op         *lop
	call       bool
	match      *event
	prev, next *event
}

type CheckResult struct {
	Ok       bool
	Unknown  bool   // gave up (time limit)
	Detail   string // why not linearizable
	Ops      int
	Dropped  int // failed ops dropped as "no effect possible"
	Explored int
}

// checkKey checks one key's history, starting from an absent key.
func checkKey(hist []Op, limit time.Duration) CheckResult {
	ops, err := prepare(hist)
	if err != nil {
		return CheckResult{Detail: err.Error()}
	}
	res := CheckResult{Ops: len(ops)}
	for _, h := range hist {
		if !h.Ok {
			res.Dropped++
		}
	}
	res.Dropped -= countMaybe(ops)
	rng := rand.New(rand.NewSource(1))
	evs := make([]*event, 0, 2*len(ops))
	for _, o := range ops {
		o.za, o.zb = rng.Uint64(), rng.Uint64()
		c := &event{op: o, call: true}
		r := &event{op: o, match: c}
		c.match = r
		evs = append(evs, c, r)
	}
	t := func(e *event) int64 {
		if e.call {
			return e.op.start
		}
		return e.op.end
	}
	// calls before returns at equal times (the more permissive order)
	sort.SliceStable(evs, func(i, j int) bool {
		ti, tj := t(evs[i]), t(evs[j])
		if ti != tj {
			return ti < tj
		}
		return evs[i].call && !evs[j].call
	})
	head := &event{}
	prev := head
	for _, e := range evs {
		prev.next, e.prev = e, prev
		prev = e
	}
	lift := func(e *event) {
		e.prev.next = e.next
		if e.next != nil {
			e.next.prev = e.prev
		}
		m := e.match
		m.prev.next = m.next
		if m.next != nil {
			m.next.prev = m.prev
		}
	}
	unlift := func(e *event) {
		m := e.match
		m.prev.next = m
		if m.next != nil {
			m.next.prev = m
		}
		e.prev.next = e
		if e.next != nil {
			e.next.prev = e
		}
	}
	type key struct{ a, b uint64 }
	sh := func(s string) key { // FNV-1a, two offsets
		a, b := uint64(14695981039346656037), uint64(1099511628211*7+3)
		for i := 0; i < len(s); i++ {
			a = (a ^ uint64(s[i])) * 1099511628211
			b = (b ^ uint64(s[i])) * 1099511628211
		}
		return key{a, b ^ 0x9e3779b97f4a7c15}
	}
	type frame struct {
		e     *event
		state string
	}
	cache := map[key]struct{}{}
	var stack []frame
	var lin key
	state := ""
	best := -1
	var stuck *lop
	began := time.Now()
	e := head.next
	for head.next != nil {
		res.Explored++
		if res.Explored%100000 == 0 && time.Since(began) > limit {
			res.Unknown = true
			res.Detail = fmt.Sprintf("gave up after %v (%d steps)", limit, res.Explored)
			return res
		}
		if e.call {
			if ok, ns := e.op.step(state); ok {
				nl := key{lin.a ^ e.op.za, lin.b ^ e.op.zb}
				s := sh(ns)
				k := key{nl.a ^ s.a, nl.b ^ s.b}
				if _, seen := cache[k]; !seen {
					cache[k] = struct{}{}
					stack = append(stack, frame{e, state})
					state, lin = ns, nl
					lift(e)
					e = head.next
					continue
				}
			}
			e = e.next
			continue
		}
		// a return whose op is not linearized yet: back track
		if len(stack) > best {
			best, stuck = len(stack), e.op
		}
		if len(stack) == 0 {
			break
		}
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		state = f.state
		lin = key{lin.a ^ f.e.op.za, lin.b ^ f.e.op.zb}
		unlift(f.e)
		e = f.e.next
	}
	if head.next == nil {
		res.Ok = true
		return res
	}
	res.Detail = describeStuck(ops, stuck, best)
	return res
}

func countMaybe(ops []*lop) int {
	n := 0
	for _, o := range ops {
		if o.maybe {
			n++
		}
	}
	return n
}

func describeStuck(ops []*lop, stuck *lop, depth int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "no linearization: at best %d ops linearized, then no order lets this op take effect:\n  %s\n", depth, stuck)
	b.WriteString("  operations overlapping it or just before it:\n")
	n := 0
	for _, o := range ops {
		if o.end >= stuck.start-500000 && o.start <= stuck.end && n < 40 {
			fmt.Fprintf(&b, "    %s\n", o)
			n++
		}
	}
	return b.String()
}

// LostWrites checks that the final value of a key is consistent with the acknowledged
// writes: it was written by some op, and no acknowledged write began after that op had
// certainly completed (such a write is ordered after it and must have replaced it).
func LostWrites(hist []Op, final Op) []string {
	var probs []string
	var writer *Op
	for i := range hist {
		h := &hist[i]
		if (h.Kind == "put" || h.Kind == "cas") && final.Found && h.In == final.Out {
			writer = h
		}
	}
	for i := range hist {
		h := &hist[i]
		acked := h.Ok && (h.Kind == "put" || (h.Kind == "cas" && h.Swapped))
		if !acked {
			continue
		}
		switch {
		case !final.Found:
			probs = append(probs, fmt.Sprintf("%s: key absent at the end, but client %d's write %q was acknowledged at %.3fs", h.Key, h.Client, h.In, float64(h.End)/1e6))
		case writer == nil:
		case writer.Ok && h.Start > writer.End:
			probs = append(probs, fmt.Sprintf("%s: acknowledged write %q (client %d, [%.3f, %.3f]s) lost: the final value %q was written by client %d's op that completed at %.3fs",
				h.Key, h.In, h.Client, float64(h.Start)/1e6, float64(h.End)/1e6, final.Out, writer.Client, float64(writer.End)/1e6))
		}
		if len(probs) > 5 {
			break
		}
	}
	if final.Found && writer == nil {
		probs = append(probs, fmt.Sprintf("%s: final value %q was never written", final.Key, final.Out))
	}
	return probs
}
