package main

import (
	"strconv"
	"testing"
	"time"
)

func put(c int, v string, s, e int64) Op {
	return Op{Client: c, Kind: "put", Key: "k", In: v, Ok: true, Start: s, End: e}
}
func get(c int, v string, s, e int64) Op {
	return Op{Client: c, Kind: "get", Key: "k", Out: v, Found: v != "", Ok: true, Start: s, End: e}
}
func cas(c int, exp, v string, swapped bool, read string, s, e int64) Op {
	return Op{Client: c, Kind: "cas", Key: "k", Exp: exp, In: v, Swapped: swapped, Out: read, Found: read != "", Ok: true, Start: s, End: e}
}
func failed(o Op) Op { o.Ok, o.Err, o.End = false, "context deadline exceeded", o.End+1000; return o }

func check(t *testing.T, want bool, h ...Op) {
	t.Helper()
	r := checkKey(h, 10*time.Second)
	if r.Unknown || r.Ok != want {
		t.Fatalf("want linearizable=%v, got %+v", want, r)
	}
}

func TestSequential(t *testing.T) {
	check(t, true, get(0, "", 0, 1), put(0, "a", 2, 3), get(1, "a", 4, 5), cas(0, "a", "b", true, "", 6, 7), get(1, "b", 8, 9))
	check(t, true, cas(0, "", "a", true, "", 0, 1), cas(1, "", "b", false, "a", 2, 3))
}

func TestStaleRead(t *testing.T) {
	check(t, false, put(0, "a", 0, 1), put(0, "b", 2, 3), get(1, "a", 4, 5))
}

func TestConcurrentEitherOrder(t *testing.T) {
	// two overlapping puts, then reads that agree on one order
	check(t, true, put(0, "a", 0, 10), put(1, "b", 1, 9), get(2, "a", 11, 12), get(2, "a", 13, 14))
	// reads must not flip back
	check(t, false, put(0, "a", 0, 10), put(1, "b", 1, 9), get(2, "a", 11, 12), get(2, "b", 13, 14), get(2, "a", 15, 16))
}

func TestCasFailureReadsCurrent(t *testing.T) {
	check(t, false, put(0, "a", 0, 1), cas(1, "a", "b", false, "a", 2, 3))  // compare held, yet failed
	check(t, false, put(0, "a", 0, 1), cas(1, "x", "b", false, "zz", 2, 3)) // read a never-written value
	check(t, false, put(0, "a", 0, 1), cas(1, "", "b", true, "", 2, 3))     // key was present
}

func TestMaybeWrites(t *testing.T) {
	// a timed-out put nobody observed: either way fine
	check(t, true, put(0, "a", 0, 1), failed(put(1, "b", 2, 3)), get(2, "a", 10, 11))
	// a timed-out put that was observed later: it happened
	check(t, true, put(0, "a", 0, 1), failed(put(1, "b", 2, 3)), get(2, "b", 10, 11), get(2, "b", 12, 13))
	// ... and once observed it cannot be undone
	check(t, false, put(0, "a", 0, 1), failed(put(1, "b", 2, 3)), get(2, "b", 10, 11), get(2, "a", 12, 13))
	// a value read before its (failed) write was invoked
	check(t, false, put(0, "a", 0, 1), get(2, "b", 2, 3), failed(put(1, "b", 5, 6)))
	// a timed-out cas observed through another cas that expected its value
	check(t, true, put(0, "a", 0, 1), failed(cas(1, "a", "b", false, "", 2, 3)), cas(2, "b", "c", true, "", 10, 11), get(0, "c", 12, 13))
	// a failed get never matters
	check(t, true, put(0, "a", 0, 1), failed(get(1, "zzz", 2, 3)))
}

func TestLostWrite(t *testing.T) {
	h := []Op{put(0, "a", 0, 1), put(1, "b", 2, 3)}
	if p := LostWrites(h, get(-1, "a", 10, 11)); len(p) == 0 {
		t.Fatal("lost write not reported")
	}
	if p := LostWrites(h, get(-1, "b", 10, 11)); len(p) != 0 {
		t.Fatal(p)
	}
	if p := LostWrites(h, get(-1, "", 10, 11)); len(p) == 0 {
		t.Fatal("absent key not reported")
	}
}

func TestLongHistoryIsFast(t *testing.T) {
	var h []Op
	for i := int64(0); i < 20000; i++ {
		v := strconv.FormatInt(i, 10)
		h = append(h, put(int(i%4), v, i*10, i*10+25), get(int(i%4)+4, v, i*10+26, i*10+30))
	}
	start := time.Now()
	check(t, true, h...)
	if time.Since(start) > 5*time.Second {
		t.Fatal("too slow")
	}
}
