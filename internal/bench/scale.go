package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/godist/dist"
)

// scaleNames are the figures of ScaleFigures. The full `godist bench` leaves them out: a
// thousand processes take most of this machine for a while. Ask for them by prefix
// (`godist bench scale`).
var scaleNames = []string{
	"scale.start_1000_ms", "scale.everywhere_1000_ms", "scale.idle_cpu_pct_1000",
	"scale.pss_mib_per_worker", "scale.pmap_1000_us_per_item", "scale.close_1000_ms",
	"scale.member_msgs_per_worker",
}

// wantScale reports whether a prefix names the scale figures explicitly.
func (r *runner) wantScale() bool {
	for _, p := range r.opt.Prefixes {
		for _, n := range scaleNames {
			if strings.HasPrefix(n, p) && strings.HasPrefix(p, "scale") {
				return true
			}
		}
	}
	return false
}

// ScaleFigures starts n local workers (1,000; 50 when quick) in a cluster of their own and
// reports, with emit:
//
//   - scale.start_1000_ms: from nothing to Start returning with every worker joined;
//   - scale.everywhere_1000_ms: the median of 5 no-op Everywhere calls;
//   - scale.idle_cpu_pct_1000: the CPU time all workers used together over 5 s of idleness,
//     in percent of one core;
//   - scale.pss_mib_per_worker: the mean proportional set size of an idle worker (its own
//     pages, plus its share of those it shares: the binary's, the runtime's);
//   - scale.pmap_1000_us_per_item: wall time per item of a Pmap of 100,000 no-ops;
//   - scale.close_1000_ms: Close, until every worker has exited;
//   - scale.member_msgs_per_worker: the driver's membership messages (Stats.MemberMsgs)
//     over the whole run, per worker: O(1) when membership is O(N).
func ScaleFigures(ctx context.Context, n int, emit func(name string, value float64, unit, baseline string)) error {
	t := time.Now()
	c, err := dist.Start(ctx, dist.WithWorkers(n), dist.WithOutput(os.Stderr), dist.WithLaunchTimeout(5*time.Minute))
	if err != nil {
		return err
	}
	defer c.Close()
	emit("scale.start_1000_ms", float64(time.Since(t).Microseconds())/1e3, "ms", "")
	var times []float64
	for range 5 {
		t := time.Now()
		if _, err := noop.Everywhere(ctx, c, struct{}{}); err != nil {
			return err
		}
		times = append(times, float64(time.Since(t).Microseconds())/1e3)
	}
	emit("scale.everywhere_1000_ms", median(times), "ms", "")

	osPids := make([]int, 0, n)
	for _, pid := range c.Workers() {
		if info, ok := c.ProcInfo(pid); ok {
			osPids = append(osPids, info.OSPid)
		}
	}
	time.Sleep(time.Second) // let the last call's echoes settle
	before, err := cpuTicks(osPids)
	if err != nil {
		return err
	}
	const idle = 5 * time.Second
	time.Sleep(idle)
	after, err := cpuTicks(osPids)
	if err != nil {
		return err
	}
	emit("scale.idle_cpu_pct_1000", float64(after-before)/clockTicks/idle.Seconds()*100, "%", "")
	var pss float64
	for _, p := range osPids {
		v, err := pssMiB(p)
		if err != nil {
			return err
		}
		pss += v
	}
	emit("scale.pss_mib_per_worker", pss/float64(len(osPids)), "MiB", "")

	in := make([]int, 100_000)
	if _, err := dist.Pmap(ctx, c, pmapNoop, in[:10_000]); err != nil { // warm up
		return err
	}
	t = time.Now()
	if _, err := dist.Pmap(ctx, c, pmapNoop, in); err != nil {
		return err
	}
	emit("scale.pmap_1000_us_per_item", us(time.Since(t))/float64(len(in)), "us", "")

	var msgs int64
	t = time.Now()
	if err := c.Close(); err != nil {
		return err
	}
	emit("scale.close_1000_ms", float64(time.Since(t).Microseconds())/1e3, "ms", "")
	msgs = c.Stats().MemberMsgs
	emit("scale.member_msgs_per_worker", float64(msgs)/float64(n), "msgs", "")
	return nil
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's CPU times (100 on every
// Linux platform Go runs on).
const clockTicks = 100

// cpuTicks returns the user and system CPU time the processes used so far, summed, in ticks.
func cpuTicks(osPids []int) (int64, error) {
	var sum int64
	for _, p := range osPids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return 0, err
		}
		// The command name may hold spaces: fields count from after its closing parenthesis.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			return 0, fmt.Errorf("short /proc/%d/stat", p)
		}
		for _, x := range f[11:13] { // utime, stime
			v, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return 0, err
			}
			sum += v
		}
	}
	return sum, nil
}

// pssMiB returns a process's proportional set size.
func pssMiB(osPid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", osPid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no Pss for os pid %d", osPid)
}
