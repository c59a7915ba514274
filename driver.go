package dist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// joinReq is the driver's first message to a new worker.
type joinReq struct {
	_        struct{} `cbor:",toarray"`
	Pid      int
	Peers    []peerInfo
	Topology string
}

type joinReply struct {
	_     struct{} `cbor:",toarray"`
	Host  string
	OSPid int
}

// AddProcs launches n workers with m (nil for the local manager) and returns their pids,
// ascending, once each has joined. Pids are given in the order workers join and never reused.
// If some workers fail, AddProcs returns the pids of those that joined and an error naming
// each failure; the failed ones are killed. Only the driver may add workers.
func (c *Cluster) AddProcs(ctx context.Context, m Manager, n int, opts ...Option) ([]int, error) {
	if !c.driver {
		return nil, ErrNotDriver
	}
	if n <= 0 {
		return nil, nil
	}
	if m == nil {
		m = LocalManager()
	}
	cfg := c.cfg
	for _, o := range opts {
		o(&cfg)
	}
	// The launch itself is bounded by spec.Timeout, which names the cause; this bounds the
	// whole, joining included.
	ctx, cancel := context.WithTimeout(ctx, cfg.launchTimeout+5*time.Second)
	defer cancel()
	spec := LaunchSpec{
		Count: n,
		Config: WorkerConfig{
			Cookie:            string(c.cookie),
			Network:           "unix",
			Bind:              c.sockDir,
			ConnectTimeout:    cfg.launchTimeout,
			PortMin:           cfg.portMin,
			PortMax:           cfg.portMax,
			TLS:               cfg.tlsFiles,
			DialTimeout:       cfg.connTimeout,
			HeartbeatInterval: cfg.hbInterval,
			// Twice the driver's: on a dark link the driver is the one that decides (and
			// reports the worker lost) before the worker gives up on it and exits.
			HeartbeatTimeout: 2 * cfg.hbTimeout,
			ExitGrace:        cfg.exitGrace,
			RecvBudget:       cfg.recvBudget,
			RecvStall:        cfg.limits.Stall,
		},
		Timeout: cfg.launchTimeout,
	}
	if cfg.hbInterval <= 0 {
		spec.Config.HeartbeatInterval = -1 // disabled, not the default
	}
	switch cfg.network {
	case "", "unix":
	case "tcp":
		spec.Config.Network, spec.Config.Bind = "tcp", cfg.bind
		if spec.Config.Bind == "" {
			spec.Config.Bind = "127.0.0.1:0"
		}
	default:
		return nil, fmt.Errorf("dist: unknown network %q (want unix or tcp)", cfg.network)
	}
	c.publish(Event{Kind: Starting, Count: n})
	procs, lerr := m.Launch(ctx, spec)
	var (
		mu   sync.Mutex
		pids []int
		errs []error
		wg   sync.WaitGroup
	)
	if lerr != nil {
		errs = append(errs, lerr)
		c.publish(Event{Kind: Exited, Reason: ExitNotStarted, Cause: lerr, Count: n - len(procs)})
	}
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pid, err := c.join(ctx, p, &lineage{m: m, spec: spec, policy: cfg.restart})
			if err != nil {
				// Not under mu: the other launches need not wait for this one to be reaped.
				killAndReap(p)
				p.SetPid(0)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				c.publish(Event{Kind: Exited, Reason: ExitNotStarted, Cause: err, Count: 1})
				return
			}
			pids = append(pids, pid)
		}()
	}
	wg.Wait()
	sort.Ints(pids)
	return pids, errors.Join(errs...)
}

// AddProcess joins a worker that was started by something other than a Manager of this
// cluster (package elastic accepts workers that dial in; the mpi manager's ranks) and returns
// its pid. p.Addr must return the address the worker announced from ServeWorker; the driver
// connects there, proves the cookie, gives the worker the next pid and the membership, and
// tells the other processes about it, exactly as for workers from AddProcs: the worker joins
// the default pool and Subscribe's callbacks see it join. When p's Done channel (if it has a
// Done() <-chan struct{} method) closes or Wait returns, the worker is removed from the
// cluster. On failure AddProcess kills p and returns an error. Only the driver may add
// workers; ctx bounds the join.
func (c *Cluster) AddProcess(ctx context.Context, p Process) (int, error) {
	if !c.driver {
		return 0, ErrNotDriver
	}
	pid, err := c.join(ctx, p, nil)
	if err != nil {
		killAndReap(p)
		p.SetPid(0)
		c.publish(Event{Kind: Exited, Reason: ExitNotStarted, Cause: err, Count: 1})
		return 0, err
	}
	return pid, nil
}

// Cookie returns the cluster cookie (Julia's cluster_cookie()): what a process must prove it
// knows to connect. Managers that start workers by other means hand it to them; give it only
// to processes you trust.
func (c *Cluster) Cookie() string { return string(c.cookie) }

// Done returns a channel that is closed when the cluster is closed (in a worker: when it
// stops serving). Helpers that live as long as the cluster, such as an elastic listener,
// watch it.
func (c *Cluster) Done() <-chan struct{} { return c.ctx.Done() }

// join connects to a launched worker and gives it the next pid.
func (c *Cluster) join(ctx context.Context, p Process, from *lineage) (int, error) {
	if cp, ok := p.(interface{ SetOutput(OutputFunc) }); ok {
		cp.SetOutput(c.printLine)
	}
	network, addr := p.Addr()
	c.publish(Event{Kind: Started, Addr: network + " " + addr})
	conn, err := c.dial(ctx, network, addr, 0)
	if err != nil {
		return 0, fmt.Errorf("dist: connecting to new worker at %s: %w", addr, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return 0, errors.New("dist: cluster closed while a worker was starting")
	}
	pid := c.nextPid
	c.nextPid++
	c.mu.Unlock()
	// The worker learns who we are from the join itself.
	c.mu.Lock()
	st := c.conns[conn]
	c.mu.Unlock()
	if st != nil {
		st.pid.Store(int64(pid))
	}
	m, err := c.encodeCall(ctx, callHeader{Fn: fnJoin}, joinReq{Pid: pid, Topology: c.cfg.topology.String()})
	if err != nil {
		conn.Close()
		return 0, err
	}
	c.memberMsgs.Add(1)
	fr, err := conn.Call(ctx, m)
	if err != nil {
		conn.Close()
		return 0, fmt.Errorf("dist: worker at %s did not join: %w", addr, err)
	}
	rep, err := decodeReply[joinReply](fnJoin, fr)
	if err != nil {
		conn.Close()
		return 0, fmt.Errorf("dist: worker at %s refused to join: %w", addr, err)
	}
	info := peerInfo{Pid: pid, Network: network, Addr: addr, Host: rep.Host, OSPid: rep.OSPid}
	// Nobody else is told: workers learn of each other when they first call each other, and
	// the ones that follow the membership are told in one list per batch of changes.
	c.mu.Lock()
	c.peers[pid] = &peer{info: info, proc: p, conn: conn, lineage: from}
	c.mu.Unlock()
	c.membersChanged()
	p.SetPid(pid)
	ev := Event{Kind: Joined, Pid: pid}
	if from != nil {
		ev.Replaces = from.replacing
	}
	c.publish(ev)
	// A worker that dies without its connection noticing (it never does on one host, but a
	// dead host may) is still removed once its process handle reports the exit.
	if !c.bg.add() {
		return pid, nil // closing: Close stops this worker with the others
	}
	go func() {
		defer c.bg.done()
		select {
		case <-c.ctx.Done():
		case <-procDone(p):
			c.workerGone(pid, fmt.Errorf("process ended: %v", p.Wait()))
		}
	}()
	return pid, nil
}

func procDone(p Process) <-chan struct{} {
	if d, ok := p.(interface{ Done() <-chan struct{} }); ok {
		return d.Done()
	}
	ch := make(chan struct{})
	go func() { p.Wait(); close(ch) }()
	return ch
}

func (c *Cluster) printLine(label, line string) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	fmt.Fprintf(c.cfg.output, "%s: %s\n", label, line)
}

// RmProcs stops the given workers: each is asked to exit, and killed if it has not within a
// few seconds or when ctx ends. It returns once all of them have exited. Pid 1 and pids that
// are not workers are ignored. Lifecycle subscribers see Exiting, then Exited with
// ExitClean (or ExitCrash if it had to be killed). Only the driver may remove workers.
func (c *Cluster) RmProcs(ctx context.Context, pids ...int) error {
	if !c.driver {
		return ErrNotDriver
	}
	var wg sync.WaitGroup
	for _, pid := range pids {
		c.mu.Lock()
		p := c.peers[pid]
		c.mu.Unlock()
		if pid <= 1 || p == nil {
			continue
		}
		p.mu.Lock()
		wasGone := p.gone != nil
		p.exiting = true // its connection will close: that is not a crash
		p.mu.Unlock()
		if !wasGone {
			c.publish(Event{Kind: Exiting, Pid: pid})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.send(ctx, pid, callHeader{Fn: fnExit}, struct{}{})
			ev := Event{Kind: Exited, Pid: pid, Reason: ExitClean}
			if p.proc != nil {
				select {
				case <-procDone(p.proc):
				case <-time.After(5 * time.Second):
					c.log.Warn("worker did not exit when asked; killing it", "pid", pid)
					ev.Reason = ExitCrash
					ev.Cause = &ProcessExitedError{Pid: pid, Cause: errors.New("did not exit within 5s when asked; killed")}
				case <-ctx.Done():
					ev.Reason = ExitCrash
					ev.Cause = &ProcessExitedError{Pid: pid, Cause: fmt.Errorf("killed: RmProcs ended before it exited: %w", ctx.Err())}
				}
				p.proc.Kill()
				if werr := p.proc.Wait(); ev.Cause == nil && werr != nil {
					ev.Reason = exitReason(werr)
					ev.Cause = &ProcessExitedError{Pid: pid, Cause: fmt.Errorf("asked to exit, it ended with: %w", werr)}
				}
			}
			c.workerGone(pid, errors.New("removed by RmProcs"))
			if !wasGone {
				c.publishExit(p, ev)
			}
			c.mu.Lock()
			delete(c.peers, pid)
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	return nil
}

// Interrupt asks the given workers to stop what they are doing, through their managers
// (Process.Interrupt: SIGINT for local workers, as Julia's interrupt(pids)). Pids that are
// not live workers of this driver are reported in the error; the others are interrupted.
func (c *Cluster) Interrupt(ctx context.Context, pids ...int) error {
	if !c.driver {
		return ErrNotDriver
	}
	var errs []error
	for _, pid := range pids {
		c.mu.Lock()
		p := c.peers[pid]
		c.mu.Unlock()
		if p == nil || p.proc == nil || !p.alive() {
			errs = append(errs, &ProcessExitedError{Pid: pid, Cause: errors.New("not a live worker")})
			continue
		}
		if err := p.proc.Interrupt(); err != nil {
			errs = append(errs, fmt.Errorf("dist: interrupting worker %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// realWorkers returns the worker pids without Workers' [1] fallback.
func (c *Cluster) realWorkers() []int {
	return slices.DeleteFunc(c.Procs(), func(p int) bool { return p == 1 })
}
