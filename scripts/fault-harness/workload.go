package main

// The workload: N clients, each its own clientv3.Client over all three endpoints,
// doing puts, linearizable gets and compare-and-swap txns on a small key space, with a
// per-operation timeout. Every operation is recorded.
//
// Every written value is unique ("c<client>-<seq>"), which keeps the linearizability
// check small (see linearize.go). The CAS is
//   txn  if value(k) == v (or version(k) == 0 when the client believes k absent)
//        then put k <new>  else get k
// with v the last value this client saw for k; a failed CAS thus also reads k.

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
)

// Op is one recorded operation (one JSON line of history.jsonl). Times are
// microseconds since the workload started.
type Op struct {
	Client  int    `json:"client"` // -1: the harness's final reads
	Kind    string `json:"op"`     // put | get | cas
	Key     string `json:"key"`
	In      string `json:"in,omitempty"`  // value written (put, cas)
	Exp     string `json:"exp,omitempty"` // cas: expected value, "" = key absent
	Out     string `json:"out,omitempty"` // get, failed cas: value read, "" = absent
	Found   bool   `json:"found,omitempty"`
	Swapped bool   `json:"swapped,omitempty"` // cas: the compare held
	Ok      bool   `json:"ok"`                // a response arrived (no error)
	Start   int64  `json:"start_us"`
	End     int64  `json:"end_us"`
	Err     string `json:"err,omitempty"`
}

func quietLogConfig(path string) *zap.Config {
	return &zap.Config{
		Level:            zap.NewAtomicLevelAt(zap.ErrorLevel),
		Encoding:         "json",
		EncoderConfig:    zap.NewProductionEncoderConfig(),
		OutputPaths:      []string{path},
		ErrorOutputPaths: []string{path},
	}
}

func newClient(endpoints []string, logPath string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		LogConfig:   quietLogConfig(logPath),
	})
}

type Workload struct {
	Clients   int
	Keys      int
	Timeout   time.Duration
	Seed      int64
	Endpoints []string
	LogPath   string
	T0        time.Time
	Pin       bool // client i talks to endpoint i mod 3 only (diagnosis)
}

func (w *Workload) keyName(i int) string { return fmt.Sprintf("fh/k%d", i) }

func (w *Workload) since() int64 { return time.Since(w.T0).Microseconds() }

// Run runs the clients until ctx ends and returns every client's operations.
func (w *Workload) Run(ctx context.Context) ([][]Op, error) {
	clis := make([]*clientv3.Client, w.Clients)
	for i := range clis {
		eps := w.Endpoints
		if w.Pin {
			eps = []string{w.Endpoints[i%len(w.Endpoints)]}
		}
		c, err := newClient(eps, w.LogPath)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clis[i] = c
	}
	out := make([][]Op, w.Clients)
	var wg sync.WaitGroup
	for i := 0; i < w.Clients; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			out[id] = w.client(ctx, id, clis[id])
		}(i)
	}
	wg.Wait()
	return out, nil
}

func (w *Workload) client(ctx context.Context, id int, cli *clientv3.Client) []Op {
	rng := rand.New(rand.NewSource(w.Seed*1000 + int64(id)))
	known := map[string]string{} // last value this client saw per key
	seq := 0
	var ops []Op
	for ctx.Err() == nil {
		key := w.keyName(rng.Intn(w.Keys))
		r := rng.Float64()
		op := Op{Client: id, Key: key}
		octx, cancel := context.WithTimeout(context.Background(), w.Timeout)
		op.Start = w.since()
		var err error
		switch {
		case r < 0.4:
			op.Kind = "get"
			var resp *clientv3.GetResponse
			if resp, err = cli.Get(octx, key); err == nil && len(resp.Kvs) > 0 {
				op.Found, op.Out = true, string(resp.Kvs[0].Value)
			}
		case r < 0.7:
			op.Kind = "put"
			seq++
			op.In = fmt.Sprintf("c%d-%d", id, seq)
			_, err = cli.Put(octx, key, op.In)
		default:
			op.Kind = "cas"
			seq++
			op.In = fmt.Sprintf("c%d-%d", id, seq)
			op.Exp = known[key]
			cmp := clientv3.Compare(clientv3.Value(key), "=", op.Exp)
			if op.Exp == "" {
				cmp = clientv3.Compare(clientv3.Version(key), "=", 0)
			}
			var resp *clientv3.TxnResponse
			resp, err = cli.Txn(octx).If(cmp).Then(clientv3.OpPut(key, op.In)).Else(clientv3.OpGet(key)).Commit()
			if err == nil {
				op.Swapped = resp.Succeeded
				if !resp.Succeeded {
					if rr := resp.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
						op.Found, op.Out = true, string(rr.Kvs[0].Value)
					}
				}
			}
		}
		op.End = w.since()
		cancel()
		if err != nil {
			op.Err = err.Error()
		} else {
			op.Ok = true
			switch {
			case op.Kind == "put" || (op.Kind == "cas" && op.Swapped):
				known[key] = op.In
			default:
				known[key] = op.Out
			}
		}
		ops = append(ops, op)
		if err != nil {
			// A user's retry loop would not spin on an error that came back at once.
			time.Sleep(10 * time.Millisecond)
		}
	}
	return ops
}

// FinalReads reads every key (linearizable, retrying up to timeout) after the faults;
// the successful reads join the history as client -1.
func (w *Workload) FinalReads(cli *clientv3.Client, timeout time.Duration) ([]Op, error) {
	var ops []Op
	for i := 0; i < w.Keys; i++ {
		key := w.keyName(i)
		deadline := time.Now().Add(timeout)
		for {
			op := Op{Client: -1, Kind: "get", Key: key, Start: w.since()}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := cli.Get(ctx, key)
			cancel()
			op.End = w.since()
			if err == nil {
				op.Ok = true
				if len(resp.Kvs) > 0 {
					op.Found, op.Out = true, string(resp.Kvs[0].Value)
				}
				ops = append(ops, op)
				break
			}
			op.Err = err.Error()
			ops = append(ops, op)
			if time.Now().After(deadline) {
				return ops, fmt.Errorf("final read of %s: %v", key, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return ops, nil
}

// Converged checks that every member serves the same values (serializable reads of
// each member alone) within timeout.
func (w *Workload) Converged(c *Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var diff string
		var vals []map[string]string
		for _, m := range c.Members {
			cli, err := newClient([]string{m.Endpoint()}, w.LogPath)
			if err != nil {
				diff = fmt.Sprintf("%s: %v", m.Name, err)
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := cli.Get(ctx, "fh/", clientv3.WithPrefix(), clientv3.WithSerializable())
			cancel()
			cli.Close()
			if err != nil {
				diff = fmt.Sprintf("%s: %v", m.Name, err)
				break
			}
			v := map[string]string{}
			for _, kv := range resp.Kvs {
				v[string(kv.Key)] = string(kv.Value)
			}
			vals = append(vals, v)
		}
		if diff == "" {
			for i := 1; i < len(vals); i++ {
				if fmt.Sprint(vals[i]) != fmt.Sprint(vals[0]) {
					diff = fmt.Sprintf("m1 has %v, m%d has %v", vals[0], i+1, vals[i])
				}
			}
		}
		if diff == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("members differ: %s", diff)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
