package main

// A 3-member cluster of one flavor (ours or etcd) on 127.0.0.1: process control
// (start, kill -9, restart, SIGSTOP/SIGCONT) and network partitions with iptables.
//
// Partitions: every member runs under its own uid (memberUID), so the kernel knows
// which member opened a connection. A rule in our chain marks each new connection
// with its opener's uid (CONNMARK); cutting member i off then drops, in OUTPUT (every
// loopback packet passes it once), all TCP to or from i's peer port and all packets
// of the connections i opened to the other members' peer ports. Client ports are
// untouched: clients still reach the cut-off member, as in a real partition between
// server racks. The same rules apply to both servers.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
)

const memberUIDBase = 47100

type Member struct {
	Idx        int
	Name       string
	ClientPort int
	PeerPort   int
	UID        int
	DataDir    string
	LogPath    string
	ID         uint64

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	running bool
	paused  bool
	admin   pb.MaintenanceClient
}

func (m *Member) ClientURL() string { return fmt.Sprintf("http://127.0.0.1:%d", m.ClientPort) }
func (m *Member) PeerURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", m.PeerPort) }
func (m *Member) Endpoint() string  { return fmt.Sprintf("127.0.0.1:%d", m.ClientPort) }

type Cluster struct {
	Flavor  string
	Bin     string
	Dir     string
	Chain   string // iptables chain of this harness process ("" = no iptables)
	Token   string
	Members []*Member
	start   time.Time
	closers []*clientv3.Client
}

func portsFree(ports ...int) bool {
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// pickBase finds a base port below the ephemeral range whose 6 ports are free.
func pickBase(preferred int) int {
	for b := preferred; b < 32000; b += 37 {
		if portsFree(b+1, b+2, b+3, b+101, b+102, b+103) {
			return b
		}
	}
	return preferred
}

func NewCluster(flavor, bin, dir, chain string, base int, seed int64) (*Cluster, error) {
	c := &Cluster{Flavor: flavor, Bin: bin, Dir: dir, Chain: chain, Token: fmt.Sprintf("fh-%s-%d", flavor, seed)}
	for i := 1; i <= 3; i++ {
		m := &Member{
			Idx: i - 1, Name: fmt.Sprintf("m%d", i),
			ClientPort: base + i, PeerPort: base + 100 + i,
			UID:     memberUIDBase + i,
			DataDir: filepath.Join(dir, fmt.Sprintf("m%d.data", i)),
			LogPath: filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
		}
		if err := os.MkdirAll(m.DataDir, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chown(m.DataDir, m.UID, m.UID); err != nil {
			return nil, err
		}
		c.Members = append(c.Members, m)
	}
	return c, nil
}

func (c *Cluster) args(m *Member) []string {
	var ic []string
	for _, o := range c.Members {
		ic = append(ic, o.Name+"="+o.PeerURL())
	}
	a := []string{
		"--name", m.Name, "--data-dir", m.DataDir,
		"--listen-client-urls", m.ClientURL(), "--advertise-client-urls", m.ClientURL(),
		"--listen-peer-urls", m.PeerURL(), "--initial-advertise-peer-urls", m.PeerURL(),
		"--initial-cluster", strings.Join(ic, ","), "--initial-cluster-state", "new",
		"--initial-cluster-token", c.Token,
	}
	if c.Flavor == "etcd" {
		// Debian's etcd 3.4 defaults to no pre-vote; ours always pre-votes (as 3.5).
		a = append(a, "--pre-vote=true")
	}
	return a
}

func (c *Cluster) Endpoints() []string {
	var e []string
	for _, m := range c.Members {
		e = append(e, m.Endpoint())
	}
	return e
}

func memberEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") {
			continue // the members take their configuration from flags only
		}
		env = append(env, kv)
	}
	return env
}

// Start (re)starts a member process; its output is appended to its log.
func (c *Cluster) Start(m *Member, note string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return nil
	}
	f, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== fault-harness: %s at %s (t=%.3fs)\n", note, time.Now().Format("2006-01-02 15:04:05.000000"), c.rel())
	cmd := exec.Command(c.Bin, c.args(m)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = memberEnv()
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: uint32(m.UID), Gid: uint32(m.UID)},
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		m.mu.Lock()
		m.running = false
		m.paused = false
		m.mu.Unlock()
		close(done)
	}()
	m.cmd, m.done, m.running, m.paused = cmd, done, true, false
	return nil
}

func (c *Cluster) rel() float64 {
	if c.start.IsZero() {
		return 0
	}
	return time.Since(c.start).Seconds()
}

// Kill sends SIGKILL and waits for the process to be gone.
func (c *Cluster) Kill(m *Member) {
	m.mu.Lock()
	cmd, done, running := m.cmd, m.done, m.running
	m.mu.Unlock()
	if !running {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (c *Cluster) signal(m *Member, sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	m.paused = sig == syscall.SIGSTOP
}

func (c *Cluster) Pause(m *Member)  { c.signal(m, syscall.SIGSTOP) }
func (c *Cluster) Resume(m *Member) { c.signal(m, syscall.SIGCONT) }

func (m *Member) Running() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.running && !m.paused }

func (c *Cluster) StopAll() {
	for _, m := range c.Members {
		c.Resume(m)
		c.Kill(m)
	}
}

// WaitReady waits for every member's "ready to serve client requests" line.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, m := range c.Members {
		for {
			if logHas(m.LogPath, "ready to serve client requests") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s %s did not become ready (log %s)", c.Flavor, m.Name, m.LogPath)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func logHas(path, s string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

// Connect opens one single-endpoint admin connection per member (for Status).
func (c *Cluster) Connect(logPath string) error {
	for _, m := range c.Members {
		cli, err := newClient([]string{m.Endpoint()}, logPath)
		if err != nil {
			return fmt.Errorf("connect to %s: %v", m.Name, err)
		}
		m.admin = pb.NewMaintenanceClient(cli.ActiveConnection())
		c.closers = append(c.closers, cli)
	}
	return nil
}

func (c *Cluster) Close() {
	for _, cl := range c.closers {
		cl.Close()
	}
}

// status asks one member for its Status (member ID, leader ID) within timeout.
func status(m *Member, timeout time.Duration) (*pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return m.admin.Status(ctx, &pb.StatusRequest{})
}

// LearnIDs records every member's ID (hex in the reports, as the servers log them).
func (c *Cluster) LearnIDs() error {
	for _, m := range c.Members {
		var err error
		for i := 0; i < 50; i++ {
			var r *pb.StatusResponse
			if r, err = status(m, time.Second); err == nil {
				m.ID = r.Header.MemberId
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("status of %s: %v", m.Name, err)
		}
	}
	return nil
}

// Leader returns the member that reports itself as leader, or nil.
func (c *Cluster) Leader() *Member {
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		r, err := status(m, 300*time.Millisecond)
		if err == nil && r.Leader == r.Header.MemberId && r.Leader != 0 {
			return m
		}
	}
	return nil
}

// WaitLeader polls until some member leads.
func (c *Cluster) WaitLeader(timeout time.Duration) *Member {
	deadline := time.Now().Add(timeout)
	for {
		if l := c.Leader(); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- iptables ----

func ipt(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// IptablesSetup creates chain (marking connections by opener uid) and chain-P (the
// partition rules), and jumps to chain first from OUTPUT.
func IptablesSetup(chain string) error {
	IptablesTeardown(chain)
	for _, ch := range []string{chain, chain + "-P"} {
		if err := ipt("-N", ch); err != nil {
			return err
		}
	}
	for i := 1; i <= 3; i++ {
		uid := strconv.Itoa(memberUIDBase + i)
		if err := ipt("-A", chain, "-m", "conntrack", "--ctstate", "NEW", "-m", "owner", "--uid-owner", uid,
			"-j", "CONNMARK", "--set-mark", uid); err != nil {
			return err
		}
	}
	if err := ipt("-A", chain, "-j", chain+"-P"); err != nil {
		return err
	}
	return ipt("-I", "OUTPUT", "1", "-j", chain)
}

func IptablesTeardown(chain string) {
	for ipt("-D", "OUTPUT", "-j", chain) == nil {
	}
	for _, ch := range []string{chain, chain + "-P"} {
		_ = ipt("-F", ch)
	}
	for _, ch := range []string{chain, chain + "-P"} {
		_ = ipt("-X", ch)
	}
}

// Partition cuts m off from the other members' peer ports (both directions).
func (c *Cluster) Partition(m *Member) error {
	p := strconv.Itoa(m.PeerPort)
	var others []string
	for _, o := range c.Members {
		if o != m {
			others = append(others, strconv.Itoa(o.PeerPort))
		}
	}
	op := strings.Join(others, ",")
	mark := strconv.Itoa(m.UID)
	ch := c.Chain + "-P"
	for _, r := range [][]string{
		{"-p", "tcp", "--dport", p},
		{"-p", "tcp", "--sport", p},
		{"-p", "tcp", "-m", "connmark", "--mark", mark, "-m", "multiport", "--dports", op},
		{"-p", "tcp", "-m", "connmark", "--mark", mark, "-m", "multiport", "--sports", op},
	} {
		if err := ipt(append(append([]string{"-A", ch}, r...), "-j", "DROP")...); err != nil {
			return err
		}
	}
	return nil
}

// Heal removes every partition rule.
func (c *Cluster) Heal() error { return ipt("-F", c.Chain+"-P") }
