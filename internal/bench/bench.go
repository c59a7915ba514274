// Package bench measures the figures `godist bench` prints, each beside a raw baseline taken
// in the same run. Figure names are stable once published: tools read them.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/rawbench"
)

// Figure is one measured number.
type Figure struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline string  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
}

// Functions the benchmarks call on workers. They are registered in every binary that links
// this package, which includes godist itself.
var (
	noop = dist.NewFunc("bench.noop", func(ctx context.Context, _ struct{}) (struct{}, error) { return struct{}{}, nil })
	sink = dist.NewFunc("bench.sink", func(ctx context.Context, xs []float64) (int, error) { return len(xs), nil })
	// sinkStruct takes the same array as a field of a struct (its slices travel out of band).
	sinkStruct = dist.NewFunc("bench.sinkstruct", func(ctx context.Context, s sample) (int, error) { return len(s.Values), nil })

	heldMu sync.Mutex
	held   []float64

	prepare = dist.NewFunc("bench.prepare", func(ctx context.Context, n int) (struct{}, error) {
		heldMu.Lock()
		defer heldMu.Unlock()
		held = make([]float64, n)
		for i := range held {
			held[i] = float64(i)
		}
		return struct{}{}, nil
	})
	source = dist.NewFunc("bench.source", func(ctx context.Context, _ struct{}) ([]float64, error) {
		heldMu.Lock()
		defer heldMu.Unlock()
		return held, nil
	})
	// collect frees the worker's garbage between timed transfers (see bulk).
	collect = dist.NewFunc("bench.collect", func(ctx context.Context, _ struct{}) (struct{}, error) {
		runtime.GC()
		return struct{}{}, nil
	})
	unhold = dist.NewFunc("bench.unhold", func(ctx context.Context, _ struct{}) (struct{}, error) {
		heldMu.Lock()
		held = nil
		heldMu.Unlock()
		return struct{}{}, nil
	})
	// bounce takes each value from in and puts value+1 on out until in is closed.
	bounce = dist.NewFunc("bench.bounce", func(ctx context.Context, chs [2]*dist.RemoteChannel[int]) (int, error) {
		n := 0
		for v, err := range chs[0].All(ctx) {
			if err != nil {
				return n, err
			}
			if err := chs[1].Put(ctx, v+1); err != nil {
				return n, err
			}
			n++
		}
		return n, nil
	})
	// relayPing sends n values through two channels between this worker and another one.
	relayPing = dist.NewFunc("bench.relayping", func(ctx context.Context, a pingArgs) ([]float64, error) {
		lat := make([]float64, 0, a.N)
		for i := 0; i < a.N; i++ {
			t := time.Now()
			if err := a.Out.Put(ctx, i); err != nil {
				return nil, err
			}
			if _, err := a.In.Take(ctx); err != nil {
				return nil, err
			}
			lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
		}
		return lat, a.Out.Close(ctx)
	})
)

type pingArgs struct {
	N   int
	Out *dist.RemoteChannel[int]
	In  *dist.RemoteChannel[int]
}

// Options tune a run.
type Options struct {
	Prefixes []string // only figures whose names start with one of these; none means all
	Quick    bool     // fewer iterations, for tests
}

type runner struct {
	opt  Options
	out  func(Figure)
	base map[string]float64
	c    *dist.Cluster
}

func (r *runner) want(names ...string) bool {
	if len(r.opt.Prefixes) == 0 {
		return true
	}
	for _, n := range names {
		for _, p := range r.opt.Prefixes {
			if strings.HasPrefix(n, p) {
				return true
			}
		}
	}
	return false
}

func (r *runner) emit(name string, v float64, unit, baseline string) {
	f := Figure{Name: name, Value: round(v), Unit: unit}
	if baseline != "" {
		if b, ok := r.base[baseline]; ok && b != 0 {
			f.Baseline = baseline
			f.Ratio = round(v / b)
		}
	}
	r.out(f)
}

// emitSelected emits a figure measured alongside others, if it was asked for. A figure without
// a baseline may be the baseline of a later one, so it is remembered either way.
func (r *runner) emitSelected(name string, v float64, unit, baseline string) {
	if baseline == "" {
		r.base[name] = v
	}
	if r.want(name) {
		r.emit(name, v, unit, baseline)
	}
}

// baseline measures a raw figure once per run, emitting it the first time.
func (r *runner) baseline(ctx context.Context, name string) (float64, error) {
	if v, ok := r.base[name]; ok {
		return v, nil
	}
	rounds := 20000
	bulk := int64(256 << 20)
	if r.opt.Quick {
		rounds, bulk = 2000, 32<<20
	}
	var v float64
	var unit string
	switch name {
	case "raw.unix.pingpong_p50_us", "raw.tcp.pingpong_p50_us":
		network := strings.Split(name, ".")[1]
		res, err := rawbench.PingPong(ctx, network, rounds)
		if err != nil {
			return 0, err
		}
		v, unit = us(res.P50), "us"
	case "raw.unix.bulk_mb_per_s":
		mb, err := rawbench.Bulk(ctx, "unix", bulk, 3)
		if err != nil {
			return 0, err
		}
		v, unit = mb, "MB/s"
	case "raw.memcpy_mb_per_s":
		v, unit = rawbench.Memcpy(int(bulk), 3), "MB/s"
	default:
		return 0, fmt.Errorf("bench: unknown baseline %s", name)
	}
	r.base[name] = v
	r.emit(name, v, unit, "")
	return v, nil
}

// Run measures the selected figures and calls out for each as soon as it is known.
func Run(ctx context.Context, opt Options, out func(Figure)) error {
	r := &runner{opt: opt, out: out, base: make(map[string]float64)}
	for _, b := range []string{"raw.unix.pingpong_p50_us", "raw.tcp.pingpong_p50_us", "raw.unix.bulk_mb_per_s"} {
		if b == "raw.unix.pingpong_p50_us" && r.want("call.p50_us", "call.p99_us") {
			continue // measured with the calls, alternating with them (callLatency)
		}
		if b == "raw.unix.bulk_mb_per_s" && r.want("send.mb_per_s", "fetch.mb_per_s", "send.struct_mb_per_s") {
			continue // measured with the transfers, alternating with them (bulk)
		}
		if r.want(b) {
			if _, err := r.baseline(ctx, b); err != nil {
				return err
			}
		}
	}
	if r.wantScale() {
		n := 1000
		if r.opt.Quick {
			n = 50
		}
		if err := ScaleFigures(ctx, n, r.emitSelected); err != nil {
			return fmt.Errorf("bench scale: %w", err)
		}
	}
	if r.want("reliability.orphan_exit_ms", "reliability.restart_ms", "reliability.recv_budget_peak_mib") {
		if err := ReliabilityFigures(ctx, r.opt.Quick, r.emitSelected); err != nil {
			return fmt.Errorf("bench reliability: %w", err)
		}
	}
	if r.want("startup.4workers_ms") {
		if err := r.startup(ctx); err != nil {
			return err
		}
	}
	steps := []struct {
		names []string
		run   func(context.Context) error
	}{
		{[]string{"call.p50_us", "call.p99_us"}, r.callLatency},
		{[]string{"reap.p50_us"}, func(ctx context.Context) error {
			if _, err := r.baseline(ctx, "raw.unix.pingpong_p50_us"); err != nil {
				return err
			}
			return ScriptFigures(ctx, r.c, r.opt.Quick, r.emitSelected)
		}},
		{[]string{"call.async_per_s"}, r.asyncCalls},
		{[]string{"send.mb_per_s", "fetch.mb_per_s", "raw.unix.array_mb_per_s", "send.struct_mb_per_s"}, r.bulk},
		{[]string{"channel.roundtrip_us"}, r.channel},
		{[]string{"worker.idle_rss_mib"}, r.idleRSS},
		{[]string{"pmap.overhead_us_per_item", "pmap.overhead_us_per_item_batch1", "pmap.speedup", "raw.threads_speedup"}, func(ctx context.Context) error {
			return PmapFigures(ctx, r.c, r.opt.Quick, r.emitSelected)
		}},
		{[]string{"reduce.serial_sum_1e8_ms", "reduce.sum_1e8_ms"}, func(ctx context.Context) error {
			return ReduceFigures(ctx, r.c, r.opt.Quick, r.emitSelected)
		}},
		{[]string{"ssh.startup_8workers_ms", "tcp.call.p50_us"}, r.sshFigures},
		{[]string{"ssh.launch_300workers_ms", "ssh.startup_300workers_ms"}, r.sshScaleFigures},
		{[]string{"shm.fetch_mb_per_s", "shm.create_256mib_ms", "raw.memcpy_mb_per_s"}, func(ctx context.Context) error {
			if _, err := r.baseline(ctx, "raw.memcpy_mb_per_s"); err != nil {
				return err
			}
			return ShmFigures(ctx, r.c, r.opt.Quick, r.emitSelected)
		}},
	}
	var any bool
	for _, s := range steps {
		any = any || r.want(s.names...)
	}
	if !any {
		return nil
	}
	c, err := dist.Start(ctx, dist.WithWorkers(2), dist.WithOutput(os.Stderr))
	if err != nil {
		return err
	}
	defer c.Close()
	r.c = c
	for _, s := range steps {
		if r.want(s.names...) {
			if err := s.run(ctx); err != nil {
				return fmt.Errorf("bench %s: %w", s.names[0], err)
			}
		}
	}
	return nil
}

func (r *runner) startup(ctx context.Context) error {
	var times []float64
	n := 5
	if r.opt.Quick {
		n = 2
	}
	for range n {
		t := time.Now()
		c, err := dist.Start(ctx, dist.WithWorkers(4), dist.WithOutput(os.Stderr))
		if err != nil {
			return err
		}
		if _, err := noop.On(ctx, c, c.Workers(), struct{}{}); err != nil {
			c.Close()
			return err
		}
		times = append(times, float64(time.Since(t).Microseconds())/1e3)
		if err := c.Close(); err != nil {
			return err
		}
	}
	r.emit("startup.4workers_ms", median(times), "ms", "")
	return nil
}

// callLatency measures call.p50_us and call.p99_us. Unless the raw ping-pong baseline was
// already measured, it is measured here, in blocks that alternate with blocks of calls: on a
// shared virtual machine, latency drifts by a third from one second to the next, and two
// figures measured a minute apart compare the machine's moods as much as the code.
func (r *runner) callLatency(ctx context.Context) error {
	n, blocks := 20000, 10
	if r.opt.Quick {
		n, blocks = 2000, 2
	}
	call := func() (float64, error) {
		t := time.Now()
		if _, err := noop.Call(ctx, r.c, 2, struct{}{}); err != nil {
			return 0, err
		}
		return float64(time.Since(t).Nanoseconds()) / 1e3, nil
	}
	for range n / 10 { // warm up
		if _, err := call(); err != nil {
			return err
		}
	}
	lat := make([]float64, 0, n)
	const base = "raw.unix.pingpong_p50_us"
	if _, ok := r.base[base]; ok {
		for range n {
			d, err := call()
			if err != nil {
				return err
			}
			lat = append(lat, d)
		}
	} else {
		pp, err := rawbench.StartPingPong(ctx, "unix")
		if err != nil {
			return err
		}
		raw := make([]float64, 0, n)
		for range n / 10 { // warm up
			if _, err := pp.Round(ctx); err != nil {
				pp.Close()
				return err
			}
		}
		for range blocks {
			for range n / blocks {
				d, err := pp.Round(ctx)
				if err != nil {
					pp.Close()
					return err
				}
				raw = append(raw, float64(d.Nanoseconds())/1e3)
			}
			for range n / blocks {
				d, err := call()
				if err != nil {
					pp.Close()
					return err
				}
				lat = append(lat, d)
			}
		}
		if err := pp.Close(); err != nil {
			return err
		}
		sort.Float64s(raw)
		r.base[base] = pct(raw, 50)
		r.emit(base, r.base[base], "us", "")
	}
	sort.Float64s(lat)
	r.emit("call.p50_us", pct(lat, 50), "us", "raw.unix.pingpong_p50_us")
	r.emit("call.p99_us", pct(lat, 99), "us", "raw.unix.pingpong_p50_us")
	return nil
}

func (r *runner) asyncCalls(ctx context.Context) error {
	n, window := 400000, 4096
	if r.opt.Quick {
		n = 20000
	}
	ws := r.c.Workers()
	run := func(n int) (float64, error) {
		futs := make([]*dist.Future[struct{}], 0, window)
		t := time.Now()
		for i := 0; i < n; i++ {
			futs = append(futs, noop.Go(ctx, r.c, ws[i%len(ws)], struct{}{}))
			if len(futs) == window {
				for _, f := range futs {
					if err := f.Wait(ctx); err != nil {
						return 0, err
					}
				}
				futs = futs[:0]
			}
		}
		for _, f := range futs {
			if err := f.Wait(ctx); err != nil {
				return 0, err
			}
		}
		return float64(n) / time.Since(t).Seconds(), nil
	}
	if _, err := run(n / 10); err != nil {
		return err
	}
	v, err := run(n)
	if err != nil {
		return err
	}
	r.emit("call.async_per_s", v, "calls/s", "")
	return nil
}

// sample is a struct with an array, as programs pass them.
type sample struct {
	Name   string
	Values []float64
}

// bulk measures send.mb_per_s and fetch.mb_per_s, each the best of three transfers of a
// 256 MiB []float64 to or from worker 2, after one untimed transfer each way. Unless the raw
// bulk baseline was already measured, it is measured here too, the best of three raw
// transfers of the same size, in rounds of a raw transfer, a send and a fetch (see
// callLatency).
func (r *runner) bulk(ctx context.Context) error {
	size := 256 << 20
	reps := 3
	if r.opt.Quick {
		size = 32 << 20
	}
	const base = "raw.unix.bulk_mb_per_s"
	var raw *rawbench.Bulker
	if _, ok := r.base[base]; !ok {
		var err error
		if raw, err = rawbench.StartBulk(ctx, "unix", int64(size)); err != nil {
			return err
		}
		defer raw.Close()
		// Warm up, as Bulk's repeats do: the first transfer pays for the socket's buffers.
		if _, err := raw.Run(ctx); err != nil {
			return err
		}
	}
	// The same bytes from and into buffers of the array's size: the memory traffic that
	// moving an array costs anyway, which the cached 4 MiB chunk of the baseline above does
	// not. Printed for reference; the ratios are to the baseline above.
	const arrayName = "raw.unix.array_mb_per_s"
	var array *rawbench.Bulker
	if r.want(arrayName) {
		var err error
		if array, err = rawbench.StartArray(ctx, "unix", int64(size)); err != nil {
			return err
		}
		defer array.Close()
		if _, err := array.Run(ctx); err != nil { // faults the peer's buffer in
			return err
		}
	}
	xs := make([]float64, size/8)
	for i := range xs {
		xs[i] = float64(i)
	}
	if _, err := prepare.Call(ctx, r.c, 2, size/8); err != nil {
		return err
	}
	// Warm up, as the raw baselines do: the first large transfer in each direction goes
	// through the socket and sets up the connection's shared-memory ring for the next ones.
	if _, err := sink.Call(ctx, r.c, 2, xs); err != nil {
		return err
	}
	if _, err := source.Call(ctx, r.c, 2, struct{}{}); err != nil {
		return err
	}
	withStruct := r.want("send.struct_mb_per_s")
	if withStruct {
		if _, err := sinkStruct.Call(ctx, r.c, 2, sample{"warm-up", xs}); err != nil {
			return err
		}
	}
	// timed runs f after collecting the last transfer's garbage on both sides, untimed, so
	// that this one lands in memory the processes have touched before, as in a steady state.
	// Memory new to a process costs the kernel's page faults, ~150-200 ms per 256 MiB on this
	// VM, more than the transfer itself; the raw baseline reuses one buffer.
	timed := func(f func() error) (float64, error) {
		if err := r.collectGarbage(ctx); err != nil {
			return 0, err
		}
		t := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		return float64(size) / time.Since(t).Seconds() / 1e6, nil
	}
	var rawBest, arrayBest, send, fetch, sendStruct float64
	for range reps {
		if raw != nil {
			mb, err := raw.Run(ctx)
			if err != nil {
				return err
			}
			rawBest = max(rawBest, mb)
		}
		if array != nil {
			mb, err := array.Run(ctx)
			if err != nil {
				return err
			}
			arrayBest = max(arrayBest, mb)
		}
		mb, err := timed(func() error {
			n, err := sink.Call(ctx, r.c, 2, xs)
			if err == nil && n != len(xs) {
				err = fmt.Errorf("sink got %d values, sent %d", n, len(xs))
			}
			return err
		})
		if err != nil {
			return err
		}
		send = max(send, mb)
		mb, err = timed(func() error {
			ys, err := source.Call(ctx, r.c, 2, struct{}{})
			if err == nil && (len(ys) != size/8 || ys[len(ys)-1] != float64(len(ys)-1)) {
				err = fmt.Errorf("fetched %d values, want %d", len(ys), size/8)
			}
			return err
		})
		if err != nil {
			return err
		}
		fetch = max(fetch, mb)
		if withStruct {
			mb, err = timed(func() error {
				n, err := sinkStruct.Call(ctx, r.c, 2, sample{"timed", xs})
				if err == nil && n != len(xs) {
					err = fmt.Errorf("sinkstruct got %d values, sent %d", n, len(xs))
				}
				return err
			})
			if err != nil {
				return err
			}
			sendStruct = max(sendStruct, mb)
		}
	}
	if raw != nil {
		r.base[base] = rawBest
		if r.want(base) {
			r.emit(base, rawBest, "MB/s", "")
		}
	}
	if array != nil {
		r.emit(arrayName, arrayBest, "MB/s", base)
	}
	r.emit("send.mb_per_s", send, "MB/s", base)
	r.emit("fetch.mb_per_s", fetch, "MB/s", base)
	if withStruct {
		r.emit("send.struct_mb_per_s", sendStruct, "MB/s", base)
	}
	_, err := unhold.Call(ctx, r.c, 2, struct{}{})
	return err
}

// collectGarbage runs a garbage collection in the driver and in worker 2.
func (r *runner) collectGarbage(ctx context.Context) error {
	runtime.GC()
	_, err := collect.Call(ctx, r.c, 2, struct{}{})
	return err
}

func (r *runner) channel(ctx context.Context) error {
	n := 5000
	if r.opt.Quick {
		n = 500
	}
	// Two channels hosted on worker 3; worker 2 puts on one and takes from the other while
	// worker 3 bounces: each round trip is two puts and two takes between two workers.
	a, err := dist.NewRemoteChannel[int](ctx, r.c, 3, 1)
	if err != nil {
		return err
	}
	b, err := dist.NewRemoteChannel[int](ctx, r.c, 3, 1)
	if err != nil {
		return err
	}
	defer a.Release()
	defer b.Release()
	bf := bounce.Go(ctx, r.c, 3, [2]*dist.RemoteChannel[int]{a, b})
	lat, err := relayPing.Call(ctx, r.c, 2, pingArgs{N: n, Out: a, In: b})
	if err != nil {
		return err
	}
	if _, err := bf.Fetch(ctx); err != nil {
		return err
	}
	sort.Float64s(lat)
	r.emit("channel.roundtrip_us", pct(lat, 50), "us", "")
	return nil
}

// idleRSS measures a fresh worker: the benchmarked ones hold buffers from the bulk figures.
func (r *runner) idleRSS(ctx context.Context) error {
	pids, err := r.c.AddProcs(ctx, nil, 1)
	if err != nil {
		return err
	}
	if _, err := noop.Call(ctx, r.c, pids[0], struct{}{}); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // let it go idle
	info, ok := r.c.ProcInfo(pids[0])
	if !ok {
		return fmt.Errorf("new worker %d gone", pids[0])
	}
	rss, err := rssMiB(info.OSPid)
	if err != nil {
		return err
	}
	r.emit("worker.idle_rss_mib", rss, "MiB", "")
	return r.c.RmProcs(ctx, pids...)
}

func rssMiB(osPid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", osPid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for os pid %d", osPid)
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return pct(s, 50)
}

func round(v float64) float64 { return math.Round(v*100) / 100 }

// Print writes figures as text lines ("name value unit [xRATIO of BASELINE]") or JSON lines.
func Print(w io.Writer, asJSON bool) func(Figure) {
	return func(f Figure) {
		if asJSON {
			b, _ := json.Marshal(f)
			fmt.Fprintf(w, "%s\n", b)
			return
		}
		line := fmt.Sprintf("%-28s %12s %s", f.Name, strconv.FormatFloat(f.Value, 'f', -1, 64), f.Unit)
		if f.Baseline != "" {
			line += fmt.Sprintf("   (%.2fx %s)", f.Ratio, f.Baseline)
		}
		fmt.Fprintln(w, line)
	}
}
