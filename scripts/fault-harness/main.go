// fault-harness: availability of a 3-member cluster of etcd-rs and of real etcd
// under the same seeded fault schedule (kill -9 + restart, SIGSTOP of the leader or a
// follower, a member cut off from its peers), with a linearizability check of every
// run's history. See README.md ("Fault harness") and scripts/fault-harness.sh.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/grpclog"
)

var (
	flagSeed      = flag.String("seed", "1", "seed, or a list (1,2,3) or range (1-5) of seeds")
	flagDuration  = flag.Duration("duration", 60*time.Second, "workload duration per run")
	flagFaults    = flag.String("faults", strings.Join(allKinds, ","), "fault kinds: "+strings.Join(allKinds, ","))
	flagServer    = flag.String("server", "both", "ours | etcd | both")
	flagOurs      = flag.String("ours-bin", "target/release/etcd", "our server binary")
	flagEtcd      = flag.String("etcd-bin", "/usr/bin/etcd", "real etcd binary")
	flagOut       = flag.String("out", "", "directory for the runs (default: a new one under target/fault-harness/)")
	flagClients   = flag.Int("clients", 8, "client goroutines, each with its own clientv3.Client")
	flagKeys      = flag.Int("keys", 8, "key space")
	flagTimeout   = flag.Duration("timeout", time.Second, "per-operation timeout")
	flagChain     = flag.String("chain", fmt.Sprintf("FH%d", os.Getpid()), "iptables chain name for the partitions")
	flagBase      = flag.Int("base-port", 21000, "preferred base port (ours; etcd uses base+1000), below 32768")
	flagLinLimit  = flag.Duration("lin-limit", 2*time.Minute, "time limit of the linearizability search per key")
	flagPin       = flag.Bool("pin", false, "diagnosis: client i uses only member i mod 3 (default: every client uses all three)")
	flagCheck     = flag.String("check", "", "only check the linearizability of this history.jsonl")
	flagReanalyze = flag.Bool("reanalyze", false, "recompute the figures of the runs under the given directories from their histories")
	flagSummarize = flag.Bool("summarize", false, "only print the comparison of the result.json files under the given directories")
)

var (
	curMu      sync.Mutex
	curCluster *Cluster
)

func main() {
	flag.Parse()
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(ioutil.Discard, ioutil.Discard, ioutil.Discard))
	if *flagCheck != "" {
		os.Exit(checkFile(*flagCheck))
	}
	if *flagReanalyze {
		for _, d := range flag.Args() {
			for _, r := range loadResults(d) {
				reanalyze(r)
			}
		}
		return
	}
	if *flagSummarize {
		var rs []*RunResult
		for _, d := range flag.Args() {
			rs = append(rs, loadResults(d)...)
		}
		fmt.Print(Compare(rs))
		return
	}
	seeds, err := parseSeeds(*flagSeed)
	die(err)
	kinds := strings.Split(*flagFaults, ",")
	if *flagFaults == "none" {
		kinds = nil
	}
	for _, k := range kinds {
		if !contains(allKinds, k) {
			die(fmt.Errorf("unknown fault kind %q", k))
		}
	}
	var servers []string
	switch *flagServer {
	case "both":
		servers = []string{"ours", "etcd"}
	case "ours", "etcd":
		servers = []string{*flagServer}
	default:
		die(fmt.Errorf("--server must be ours, etcd or both"))
	}
	root := *flagOut
	if root == "" {
		root = filepath.Join("target", "fault-harness", time.Now().Format("20060102-150405"))
	}
	root, _ = filepath.Abs(root)
	die(os.MkdirAll(root, 0o755))
	die(os.Chmod(root, 0o755))
	fmt.Printf("fault-harness: runs in %s\n", root)

	die(IptablesSetup(*flagChain))
	defer IptablesTeardown(*flagChain)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		curMu.Lock()
		if curCluster != nil {
			curCluster.StopAll()
		}
		IptablesTeardown(*flagChain)
		fmt.Fprintln(os.Stderr, "fault-harness: interrupted")
		os.Exit(130)
	}()

	var results []*RunResult
	for _, seed := range seeds {
		for _, srv := range servers {
			r, err := runOne(root, srv, seed, kinds)
			if err != nil {
				fmt.Fprintf(os.Stderr, "run %s seed %d failed: %v\n", srv, seed, err)
				continue
			}
			results = append(results, r)
		}
	}
	summary := Compare(results)
	fmt.Print("\n" + summary)
	_ = ioutil.WriteFile(filepath.Join(root, "summary.txt"), []byte(summary), 0o644)
	fmt.Printf("\nruns, member logs, histories and reports: %s\n", root)
	for _, r := range results {
		if !r.LinOk || len(r.Lost) > 0 || len(r.Problems) > 0 {
			os.Exit(1)
		}
	}
}

func runOne(root, server string, seed int64, kinds []string) (*RunResult, error) {
	name := strings.Join(kinds, "+")
	if name == "" {
		name = "nofaults"
	}
	if *flagPin {
		name += "-pinned"
	}
	dir := filepath.Join(root, fmt.Sprintf("%s-seed%d-%s", server, seed, name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bin := *flagOurs
	base := *flagBase
	if server == "etcd" {
		bin = *flagEtcd
		base += 1000
	}
	bin, _ = filepath.Abs(bin)
	base = pickBase(base)
	c, err := NewCluster(server, bin, dir, *flagChain, base, seed)
	if err != nil {
		return nil, err
	}
	curMu.Lock()
	curCluster = c
	curMu.Unlock()
	defer func() {
		c.StopAll()
		c.Close()
		_ = c.Heal()
		curMu.Lock()
		curCluster = nil
		curMu.Unlock()
	}()
	fmt.Printf("\n== %s, seed %d, faults %s, %v: cluster on 127.0.0.1:%d-%d (peers %d-%d), run dir %s\n",
		server, seed, strings.Join(kinds, ","), *flagDuration, base+1, base+3, base+101, base+103, dir)
	for _, m := range c.Members {
		if err := c.Start(m, "start"); err != nil {
			return nil, err
		}
	}
	if err := c.WaitReady(30 * time.Second); err != nil {
		return nil, err
	}
	clientLog := filepath.Join(dir, "clients.log")
	if err := c.Connect(clientLog); err != nil {
		return nil, err
	}
	if c.WaitLeader(15*time.Second) == nil {
		return nil, fmt.Errorf("no leader after 15 s")
	}
	if err := c.LearnIDs(); err != nil {
		return nil, err
	}
	r := &RunResult{Server: server, Seed: seed, Kinds: kinds, Dir: dir}
	for _, m := range c.Members {
		r.Members = append(r.Members, fmt.Sprintf("%s=%x client :%d peer :%d uid %d", m.Name, m.ID, m.ClientPort, m.PeerPort, m.UID))
	}

	faults := Schedule(seed, kinds, *flagDuration)
	w := &Workload{Clients: *flagClients, Keys: *flagKeys, Timeout: *flagTimeout, Seed: seed, Endpoints: c.Endpoints(), LogPath: clientLog, Pin: *flagPin}
	w.T0 = time.Now()
	c.start = w.T0
	fmt.Printf("workload starts at %s\n", w.T0.Format("15:04:05.000"))
	ctx, cancel := context.WithTimeout(context.Background(), *flagDuration)
	defer cancel()
	injected := make(chan struct{})
	logf := func(f string, a ...interface{}) { fmt.Printf("  "+f+"\n", a...) }
	go func() {
		Inject(ctx, c, faults, w.T0, logf)
		close(injected)
	}()
	perClient, err := w.Run(ctx)
	if err != nil {
		return nil, err
	}
	cancel()
	<-injected
	// whatever happened, put the cluster back together for the final reads
	_ = c.Heal()
	for _, m := range c.Members {
		c.Resume(m)
		if !m.Running() {
			r.Problems = append(r.Problems, fmt.Sprintf("%s was not running after the faults", m.Name))
			_ = c.Start(m, "restart for the final reads")
		}
	}
	var ops []Op
	for _, o := range perClient {
		ops = append(ops, o...)
	}
	r.Analyze(ops, faults, *flagDuration)

	fcli, err := newClient(c.Endpoints(), clientLog)
	if err != nil {
		return nil, err
	}
	finals, ferr := w.FinalReads(fcli, 30*time.Second)
	fcli.Close()
	if ferr != nil {
		r.Problems = append(r.Problems, ferr.Error())
	}
	if err := w.Converged(c, 15*time.Second); err != nil {
		r.Converge = err.Error()
		r.Problems = append(r.Problems, err.Error())
	} else {
		r.Converge = "yes"
	}
	c.StopAll()

	all := append(ops, finals...)
	sort.Slice(all, func(i, j int) bool { return all[i].Start < all[j].Start })
	writeJSONL(filepath.Join(dir, "history.jsonl"), len(all), func(i int) interface{} { return all[i] })
	writeJSONL(filepath.Join(dir, "faults.jsonl"), len(faults), func(i int) interface{} { return faults[i] })

	// linearizability, key by key, and the final values
	byKey := map[string][]Op{}
	for _, o := range all {
		byKey[o.Key] = append(byKey[o.Key], o)
	}
	r.LinOk = true
	var keys []string
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var linNotes []string
	for _, k := range keys {
		cr := checkKey(byKey[k], *flagLinLimit)
		linNotes = append(linNotes, fmt.Sprintf("%s: %d ops checked, %d failed ops dropped, %d steps, ok=%v unknown=%v",
			k, cr.Ops, cr.Dropped, cr.Explored, cr.Ok, cr.Unknown))
		if cr.Unknown {
			r.LinUnknown++
		} else if !cr.Ok {
			r.LinOk = false
			r.LinDetail = append(r.LinDetail, k+": "+cr.Detail)
		}
		var final *Op
		for i := range finals {
			if finals[i].Key == k && finals[i].Ok {
				final = &finals[i]
			}
		}
		if final != nil {
			r.Lost = append(r.Lost, LostWrites(byKey[k], *final)...)
		}
	}
	_ = ioutil.WriteFile(filepath.Join(dir, "linearizability.txt"), []byte(strings.Join(linNotes, "\n")+"\n"), 0o644)
	txt := r.Text()
	_ = ioutil.WriteFile(filepath.Join(dir, "report.txt"), []byte(txt), 0o644)
	js, _ := json.MarshalIndent(r, "", " ")
	_ = ioutil.WriteFile(filepath.Join(dir, "result.json"), js, 0o644)
	// the console gets the report without the per-second table
	if i := strings.Index(txt, "\nper second:"); i >= 0 {
		txt = txt[:i]
	}
	fmt.Print(txt)
	return r, nil
}

// checkFile checks a recorded history, key by key (exit status 1 if not linearizable).
func checkFile(path string) int {
	f, err := os.Open(path)
	die(err)
	defer f.Close()
	byKey := map[string][]Op{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var o Op
		die(json.Unmarshal(sc.Bytes(), &o))
		byKey[o.Key] = append(byKey[o.Key], o)
	}
	status := 0
	for k, h := range byKey {
		cr := checkKey(h, *flagLinLimit)
		fmt.Printf("%s: %d ops, ok=%v unknown=%v %s\n", k, cr.Ops, cr.Ok, cr.Unknown, cr.Detail)
		if !cr.Ok && !cr.Unknown {
			status = 1
		}
	}
	return status
}

func readJSONL(path string, each func([]byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if err := each(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// reanalyze recomputes a finished run's throughput figures (not the checks).
func reanalyze(r *RunResult) {
	var ops []Op
	var faults []Fault
	err := readJSONL(filepath.Join(r.Dir, "history.jsonl"), func(b []byte) error {
		var o Op
		if err := json.Unmarshal(b, &o); err != nil {
			return err
		}
		if o.Client >= 0 {
			ops = append(ops, o)
		}
		return nil
	})
	if err == nil {
		err = readJSONL(filepath.Join(r.Dir, "faults.jsonl"), func(b []byte) error {
			var f Fault
			err := json.Unmarshal(b, &f)
			faults = append(faults, f)
			return err
		})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", r.Dir, err)
		return
	}
	n := &RunResult{Server: r.Server, Seed: r.Seed, Kinds: r.Kinds, Dir: r.Dir, Members: r.Members,
		LinOk: r.LinOk, LinUnknown: r.LinUnknown, LinDetail: r.LinDetail, Lost: r.Lost, Converge: r.Converge, Problems: r.Problems}
	n.Analyze(ops, faults, time.Duration(r.Duration*float64(time.Second)))
	_ = ioutil.WriteFile(filepath.Join(r.Dir, "report.txt"), []byte(n.Text()), 0o644)
	js, _ := json.MarshalIndent(n, "", " ")
	_ = ioutil.WriteFile(filepath.Join(r.Dir, "result.json"), js, 0o644)
	fmt.Printf("reanalyzed %s\n", r.Dir)
}

func writeJSONL(path string, n int, at func(int) interface{}) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	enc := json.NewEncoder(bw)
	for i := 0; i < n; i++ {
		_ = enc.Encode(at(i))
	}
	bw.Flush()
}

func loadResults(dir string) []*RunResult {
	var rs []*RunResult
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Name() == "result.json" {
			if b, err := ioutil.ReadFile(p); err == nil {
				r := &RunResult{}
				if json.Unmarshal(b, r) == nil {
					rs = append(rs, r)
				}
			}
		}
		return nil
	})
	return rs
}

// Compare prints per-run figures and, where both servers ran the same seed and
// faults, the ratios ours/etcd, per run and per fault kind.
func Compare(rs []*RunResult) string {
	var b strings.Builder
	type pair struct{ ours, etcd *RunResult }
	pairs := map[string]*pair{}
	var order []string
	for _, r := range rs {
		k := fmt.Sprintf("%d|%s|%.0f", r.Seed, strings.Join(r.Kinds, ","), r.Duration)
		p := pairs[k]
		if p == nil {
			p = &pair{}
			pairs[k] = p
			order = append(order, k)
		}
		if r.Server == "ours" {
			p.ours = r
		} else {
			p.etcd = r
		}
	}
	lin := func(r *RunResult) string {
		if r == nil {
			return "-"
		}
		s := "ok"
		if !r.LinOk {
			s = "FAIL"
		} else if r.LinUnknown > 0 {
			s = "?"
		}
		if len(r.Lost) > 0 {
			s += "+LOST"
		}
		if len(r.Problems) > 0 {
			s += "+PROBLEM"
		}
		return s
	}
	f := func(r *RunResult, g func(*RunResult) float64) string {
		if r == nil {
			return "-"
		}
		return fmt.Sprintf("%.0f", g(r))
	}
	rt := func(a, e *RunResult, g func(*RunResult) float64) string {
		if a == nil || e == nil || g(e) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", g(a)/g(e))
	}
	rate := func(r *RunResult) float64 { return r.OkRate() }
	base := func(r *RunResult) float64 { return r.Baseline }
	errs := func(r *RunResult) float64 { return float64(r.TotalErr) }
	fmt.Fprintf(&b, "per run (successful ops/s over the whole run; baseline = median of quiet seconds):\n")
	fmt.Fprintf(&b, "%-5s %-40s %4s %8s %8s %6s %8s %8s %6s %7s %7s %6s %6s\n", "seed", "faults", "dur", "ours/s", "etcd/s", "ratio",
		"ours-bl", "etcd-bl", "ratio", "o-errs", "e-errs", "o-lin", "e-lin")
	byKind := map[string]*[2]KindStat{}
	for _, k := range order {
		p := pairs[k]
		any := p.ours
		if any == nil {
			any = p.etcd
		}
		fmt.Fprintf(&b, "%-5d %-40s %3.0fs %8s %8s %6s %8s %8s %6s %7s %7s %6s %6s\n", any.Seed, strings.Join(any.Kinds, ","), any.Duration,
			f(p.ours, rate), f(p.etcd, rate), rt(p.ours, p.etcd, rate), f(p.ours, base), f(p.etcd, base), rt(p.ours, p.etcd, base),
			f(p.ours, errs), f(p.etcd, errs), lin(p.ours), lin(p.etcd))
		for i, r := range []*RunResult{p.ours, p.etcd} {
			if r == nil {
				continue
			}
			for kind, s := range r.ByKind {
				if byKind[kind] == nil {
					byKind[kind] = &[2]KindStat{}
				}
				byKind[kind][i].add(s)
			}
		}
	}
	fmt.Fprintf(&b, "\nper fault kind, all runs above (ok/s in = during the fault; ok/s win = from the fault to the next one;\nrec-1st = mean time from the fault's start to the first 1 s window back at >= 80%% of the baseline;\nstable = mean time until throughput stays >= 80%% (nr: runs where it did not within the window)):\n")
	fmt.Fprintf(&b, "%-15s %5s %8s %8s %6s %8s %8s %6s %7s %7s %8s %8s %10s %10s\n", "kind", "count", "ours in", "etcd in", "ratio",
		"ours win", "etcd win", "ratio", "o-errs", "e-errs", "o-rec1st", "e-rec1st", "o-stable", "e-stable")
	m := map[string]*KindStat{}
	for k := range byKind {
		m[k] = nil
	}
	for _, kind := range kindOrder(m) {
		o, e := byKind[kind][0], byKind[kind][1]
		r := func(a, b float64) string {
			if b == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", a/b)
		}
		nr := func(s KindStat) string {
			if s.NotRecovered > 0 {
				return fmt.Sprintf("%.1fs+%dnr", s.MeanRec(), s.NotRecovered)
			}
			return fmt.Sprintf("%.1fs", s.MeanRec())
		}
		fmt.Fprintf(&b, "%-15s %2d/%-2d %8.0f %8.0f %6s %8.0f %8.0f %6s %7d %7d %7.1fs %7.1fs %10s %10s\n", kind, o.Count, e.Count,
			o.DuringRate(), e.DuringRate(), r(o.DuringRate(), e.DuringRate()), o.WindowRate(), e.WindowRate(), r(o.WindowRate(), e.WindowRate()),
			o.Errors, e.Errors, o.MeanFirst(), e.MeanFirst(), nr(o), nr(e))
	}
	return b.String()
}

func parseSeeds(s string) ([]int64, error) {
	var out []int64
	for _, part := range strings.Split(s, ",") {
		if i := strings.Index(part, "-"); i > 0 {
			a, err1 := strconv.ParseInt(part[:i], 10, 64)
			z, err2 := strconv.ParseInt(part[i+1:], 10, 64)
			if err1 != nil || err2 != nil || z < a {
				return nil, fmt.Errorf("bad seed range %q", part)
			}
			for x := a; x <= z; x++ {
				out = append(out, x)
			}
			continue
		}
		x, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad seed %q", part)
		}
		out = append(out, x)
	}
	return out, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func die(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault-harness:", err)
		os.Exit(2)
	}
}
