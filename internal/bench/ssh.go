package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/godist/dist/ssh"
)

// HostsEnvFile is where scripts/hosts.sh leaves the description of the test hosts (network
// namespaces with their own sshd); GODIST_HOSTS_DIR moves it.
func HostsEnvFile() string {
	dir := os.Getenv("GODIST_HOSTS_DIR")
	if dir == "" {
		dir = "/run/godist/hosts"
	}
	return dir + "/env"
}

// sshHosts reads the host names and ssh config from HostsEnvFile; ok is false when the
// hosts are not up.
func sshHosts() (names []string, config string, ok bool) {
	f, err := os.Open(HostsEnvFile())
	if err != nil {
		return nil, "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "GODIST_HOSTS":
			names = strings.Fields(strings.Trim(v, `"`))
		case "SSH_CONFIG":
			config = strings.Trim(v, `"`)
		}
	}
	return names, config, len(names) > 0 && config != ""
}

// sshFigures measures, on the namespace hosts of scripts/hosts.sh (omitted, with a note on
// stderr, when they are not up):
//
//   - ssh.startup_8workers_ms: adding 8 workers spread over the hosts to the running cluster
//     with a new ssh manager (so each host is probed again, as in a fresh start), until
//     each has answered a call; the median of 3 rounds (1 when quick);
//   - tcp.call.p50_us: the median round trip of a no-op call from the driver to one of those
//     workers over TCP through the hosts' bridge, beside raw.tcp.pingpong_p50_us.
func (r *runner) sshFigures(ctx context.Context) error {
	names, config, ok := sshHosts()
	if !ok {
		fmt.Fprintf(os.Stderr, "bench: ssh.startup_8workers_ms and tcp.call.p50_us omitted: no test hosts (%s missing; run scripts/hosts.sh as root)\n", HostsEnvFile())
		return nil
	}
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
