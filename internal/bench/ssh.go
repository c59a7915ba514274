package bench

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest/hostsenv"
	"github.com/godist/dist/ssh"
)

// sshFigures measures, on the namespace hosts of scripts/hosts.sh (omitted, with a note on
// stderr, when they are not up):
//
//   - ssh.startup_8workers_ms: adding 8 workers spread over the hosts to the running cluster
//     with a new ssh manager (so each host is probed again, as in a fresh start), until
//     each has answered a call; the median of 3 rounds (1 when quick);
//   - tcp.call.p50_us: the median round trip of a no-op call from the driver to one of those
//     workers over TCP through the hosts' bridge, beside raw.tcp.pingpong_p50_us.
func (r *runner) sshFigures(ctx context.Context) error {
	hosts, err := hostsenv.Read()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: ssh.startup_8workers_ms and tcp.call.p50_us omitted: no test hosts (%v)\n", err)
		return nil
	}
	names, config := hosts.Names, hosts.SSHConfig
	var machines []ssh.Machine
	for i, h := range names {
		// 8 workers over the hosts, as evenly as they go.
		n := 8 / len(names)
		if i < 8%len(names) {
			n++
		}
		if n == 0 {
			continue
		}
		m, err := ssh.ParseMachine(h, n)
		if err != nil {
			return err
		}
		machines = append(machines, m)
	}
	rounds := 3
	if r.opt.Quick {
		rounds = 1
	}
	var times []float64
	var pids []int
	for i := range rounds {
		m, err := ssh.New(machines, ssh.Options{Flags: []string{"-F", config}})
		if err != nil {
			return err
		}
		t := time.Now()
		pids, err = r.c.AddProcs(ctx, m, 8)
		if err == nil {
			_, err = noop.On(ctx, r.c, pids, struct{}{})
		}
		if err != nil {
			r.c.RmProcs(ctx, pids...)
			return fmt.Errorf("ssh workers on %v: %w", names, err)
		}
		times = append(times, float64(time.Since(t).Microseconds())/1e3)
		if i < rounds-1 {
			if err := r.c.RmProcs(ctx, pids...); err != nil {
				return err
			}
		}
	}
	defer r.c.RmProcs(context.WithoutCancel(ctx), pids...)
	if r.want("ssh.startup_8workers_ms") {
		r.emit("ssh.startup_8workers_ms", median(times), "ms", "")
	}
	if !r.want("tcp.call.p50_us") {
		return nil
	}
	if _, err := r.baseline(ctx, "raw.tcp.pingpong_p50_us"); err != nil {
		return err
	}
	n := 20000
	if r.opt.Quick {
		n = 2000
	}
	pid := pids[0]
	for range n / 10 { // warm up
		if _, err := noop.Call(ctx, r.c, pid, struct{}{}); err != nil {
			return err
		}
	}
	lat := make([]float64, 0, n)
	for range n {
		t := time.Now()
		if _, err := noop.Call(ctx, r.c, pid, struct{}{}); err != nil {
			return err
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
	}
	sort.Float64s(lat)
	r.emit("tcp.call.p50_us", pct(lat, 50), "us", "raw.tcp.pingpong_p50_us")
	return nil
}

// sshScaleFigures measures, on the namespace hosts of scripts/hosts.sh, 300 workers spread
// evenly over the hosts and added to the running cluster by a new ssh manager, in one round:
//
//   - ssh.launch_300workers_ms: until the manager's Launch returned, every worker having
//     printed its address (the ssh part);
//   - ssh.startup_300workers_ms: until every worker has joined and answered a no-op call
//     (the launch, then the cluster's joins and a call to each).
//
// They take ~10 s of both CPUs of the 2-core VM, so a run without prefixes omits them (with a
// note on stderr): ask for them by prefix, as in `godist bench ssh` or `godist bench
// ssh.startup_300`.
func (r *runner) sshScaleFigures(ctx context.Context) error {
	const n = 300
	names := []string{"ssh.launch_300workers_ms", "ssh.startup_300workers_ms"}
	if len(r.opt.Prefixes) == 0 {
		fmt.Fprintf(os.Stderr, "bench: %v omitted: only measured when asked by prefix (godist bench ssh)\n", names)
		return nil
	}
	hosts, err := hostsenv.Read()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v omitted: no test hosts (%v)\n", names, err)
		return nil
	}
	var machines []ssh.Machine
	for i, h := range hosts.Names {
		k := n / len(hosts.Names)
		if i < n%len(hosts.Names) {
			k++
		}
		m, err := ssh.ParseMachine(h, k)
		if err != nil {
			return err
		}
		machines = append(machines, m)
	}
	m, err := ssh.New(machines, ssh.Options{Flags: []string{"-F", hosts.SSHConfig}})
	if err != nil {
		return err
	}
	tm := &timedManager{m: m}
	t := time.Now()
	pids, err := r.c.AddProcs(ctx, tm, n)
	defer r.c.RmProcs(context.WithoutCancel(ctx), pids...)
	if err == nil {
		_, err = noop.On(ctx, r.c, pids, struct{}{})
	}
	if err != nil {
		return fmt.Errorf("%d ssh workers on %v: %w", n, hosts.Names, err)
	}
	ready := time.Since(t)
	if r.want(names[0]) {
		r.emit(names[0], float64(tm.launched.Sub(t).Microseconds())/1e3, "ms", "")
	}
	if r.want(names[1]) {
		r.emit(names[1], float64(ready.Microseconds())/1e3, "ms", "")
	}
	return nil
}

// timedManager notes when its manager's Launch returned.
type timedManager struct {
	m        dist.Manager
	launched time.Time
}

func (t *timedManager) Launch(ctx context.Context, spec dist.LaunchSpec) ([]dist.Process, error) {
	ps, err := t.m.Launch(ctx, spec)
	t.launched = time.Now()
	return ps, err
}
