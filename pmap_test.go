package dist_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// Functions the Pmap tests run on workers.
var (
	pmSquare = dist.NewFunc("pmaptest.square", func(ctx context.Context, x int) (int, error) { return x * x, nil })
	// pmWho returns the item and the pid that ran it.
	pmWho = dist.NewFunc("pmaptest.who", func(ctx context.Context, i int) ([2]int, error) {
		return [2]int{i, dist.Current(ctx).MyID()}, nil
	})
	pmSleep = dist.NewFunc("pmaptest.sleep", func(ctx context.Context, d time.Duration) (int, error) {
		select {
		case <-time.After(d):
			return dist.Current(ctx).MyID(), nil
		case <-ctx.Done():
			pmCancelled.Add(1)
			return 0, ctx.Err()
		}
	})
	pmCancelledN = dist.NewFunc("pmaptest.cancelled", func(ctx context.Context, _ struct{}) (int64, error) {
		return pmCancelled.Load(), nil
	})
	// pmAttempt runs on the driver: it counts the calls per key and returns the count.
	pmAttempt = dist.NewFunc("pmaptest.attempt", func(ctx context.Context, key string) (int, error) {
		pmAttemptsMu.Lock()
		defer pmAttemptsMu.Unlock()
		pmAttempts[key]++
		return pmAttempts[key], nil
	})
	// pmFlaky fails its first Fail attempts (counted on the driver), then returns I.
	pmFlaky = dist.NewFunc("pmaptest.flaky", func(ctx context.Context, a flakyArg) (int, error) {
		n, err := pmAttempt.Call(ctx, dist.Current(ctx), 1, fmt.Sprintf("%s/%d", a.Key, a.I))
		if err != nil {
			return 0, err
		}
		if n <= a.Fail {
			return 0, fmt.Errorf("flaky %d: attempt %d", a.I, n)
		}
		return a.I, nil
	})
	// pmLogged records its start on the driver (key, item, pid), works for D, and returns its pid.
	pmLogged = dist.NewFunc("pmaptest.logged", func(ctx context.Context, a loggedArg) (int, error) {
		me := dist.Current(ctx).MyID()
		if _, err := pmStarted.Call(ctx, dist.Current(ctx), 1, [2]int{a.I, me}); err != nil {
			return 0, err
		}
		select {
		case <-time.After(a.D):
			return me, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	pmStarted = dist.NewFunc("pmaptest.started", func(ctx context.Context, a [2]int) (struct{}, error) {
		pmStartsMu.Lock()
		defer pmStartsMu.Unlock()
		pmStarts = append(pmStarts, a)
		return struct{}{}, nil
	})
)

type flakyArg struct {
	Key  string
	I    int
	Fail int
}

type loggedArg struct {
	I int
	D time.Duration
}

var (
	pmCancelled  atomic.Int64
	pmAttemptsMu sync.Mutex
	pmAttempts   = map[string]int{}
	pmStartsMu   sync.Mutex
	pmStarts     [][2]int
)

var pmKeys atomic.Int64

// newKey returns a key for pmAttempt that no other test run uses (tests may run with -count).
func newKey(t *testing.T) string { return fmt.Sprintf("%s#%d", t.Name(), pmKeys.Add(1)) }

func attempts(key string, i int) int {
	pmAttemptsMu.Lock()
	defer pmAttemptsMu.Unlock()
	return pmAttempts[fmt.Sprintf("%s/%d", key, i)]
}

func TestPmapOrder(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	in := make([]int, 1000)
	for i := range in {
		in[i] = i
	}
	var st dist.PmapStats
	out, err := dist.Pmap(ctx, c, pmWho, in, dist.WithStats(&st))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("%d results for %d items", len(out), len(in))
	}
	for i, r := range out {
		if r[0] != i || (r[1] != 2 && r[1] != 3) {
			t.Fatalf("result %d = %v", i, r)
		}
	}
	if st.ByWorker[2]+st.ByWorker[3] != len(in) || st.Items != len(in) {
		t.Fatalf("stats %+v", st)
	}
	// An empty input is an empty result.
	if out, err := dist.Pmap(ctx, c, pmSquare, nil); err != nil || out == nil || len(out) != 0 {
		t.Fatalf("empty Pmap = %v, %v", out, err)
	}
}

// TestPmapLoadBalancing: one long item and many short ones. Handed out dynamically, the short
// ones all go to the other worker while the long one runs; a static split would put half of
// them behind the long one.
func TestPmapLoadBalancing(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	in := []time.Duration{600 * time.Millisecond}
	for range 6 {
		in = append(in, 80*time.Millisecond)
	}
	start := time.Now()
	out, err := dist.Pmap(ctx, c, pmSleep, in)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	long := out[0]
	for i, pid := range out[1:] {
		if pid == long {
			t.Fatalf("short item %d ran on worker %d behind the long item (pids %v)", i+1, pid, out)
		}
	}
	t.Logf("pids %v in %v", out, elapsed)
	if elapsed > 1100*time.Millisecond {
		t.Fatalf("took %v; balanced, it takes ~600ms", elapsed)
	}
}

func TestPmapBatching(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	c, _ := disttest.Start(t, 2)
	const n = 10_000
	in := make([]int, n)
	for i := range in {
		in[i] = i
	}
	check := func(out []int) {
		t.Helper()
		for i, v := range out {
			if v != i*i {
				t.Fatalf("out[%d] = %d", i, v)
			}
		}
	}
	var auto dist.PmapStats
	out, err := dist.Pmap(ctx, c, pmSquare, in, dist.WithStats(&auto))
	if err != nil {
		t.Fatal(err)
	}
	check(out)
	t.Logf("auto: %d calls, largest batch %d, %v", auto.Calls, auto.MaxBatch, auto.Elapsed)
	if auto.Calls > n/2 || auto.MaxBatch < 100 {
		t.Fatalf("automatic batching made %d calls for %d items (largest batch %d)", auto.Calls, n, auto.MaxBatch)
	}

	var fixed dist.PmapStats
	out, err = dist.Pmap(ctx, c, pmSquare, in, dist.WithBatchSize(100), dist.WithStats(&fixed))
	if err != nil {
		t.Fatal(err)
	}
	check(out)
	if fixed.Calls != n/100 || fixed.MaxBatch != 100 {
		t.Fatalf("batch size 100: %d calls, largest %d", fixed.Calls, fixed.MaxBatch)
	}

	var one dist.PmapStats
	out, err = dist.Pmap(ctx, c, pmSquare, in, dist.WithBatchSize(1), dist.WithStats(&one))
	if err != nil {
		t.Fatal(err)
	}
	check(out)
	t.Logf("batch 1: %d calls, %v", one.Calls, one.Elapsed)
	if one.Calls != n || one.MaxBatch != 1 {
		t.Fatalf("batch size 1: %d calls, largest %d", one.Calls, one.MaxBatch)
	}
	// The overhead per item is what batching is for: with ~100 µs per call and hundreds of
	// items per batch, the margin is an order of magnitude.
	if auto.Elapsed >= one.Elapsed {
		t.Fatalf("automatic batching took %v, batch size 1 %v", auto.Elapsed, one.Elapsed)
	}
}

func TestPmapRetry(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	key := newKey(t)
	in := make([]flakyArg, 20)
	for i := range in {
		in[i] = flakyArg{Key: key, I: i}
	}
	in[3].Fail, in[11].Fail = 2, 2
	var delays []int
	var mu sync.Mutex
	var st dist.PmapStats
	out, err := dist.Pmap(ctx, c, pmFlaky, in,
		dist.WithRetry(3, func(a int) time.Duration {
			mu.Lock()
			delays = append(delays, a)
			mu.Unlock()
			return time.Duration(a) * 5 * time.Millisecond
		}, nil),
		dist.WithStats(&st))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != i {
			t.Fatalf("out[%d] = %d", i, v)
		}
	}
	for _, i := range []int{3, 11} {
		if n := attempts(key, i); n != 3 {
			t.Fatalf("item %d ran %d times, want 3", i, n)
		}
	}
	if n := attempts(key, 0); n != 1 {
		t.Fatalf("item 0 ran %d times", n)
	}
	slices.Sort(delays)
	if st.Retries != 4 || !slices.Equal(delays, []int{1, 1, 2, 2}) {
		t.Fatalf("retries %d, delays asked for attempts %v", st.Retries, delays)
	}

	// Too few retries: the error of the last attempt fails the Pmap.
	key2 := key + "/few"
	_, err = dist.Pmap(ctx, c, pmFlaky, []flakyArg{{Key: key2, I: 0}, {Key: key2, I: 1, Fail: 5}}, dist.WithRetry(2, nil, nil))
	var re *dist.RemoteError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "item 1") || !strings.Contains(re.Msg, "attempt 3") {
		t.Fatalf("exhausted retries: %v", err)
	}
	if n := attempts(key2, 1); n != 3 {
		t.Fatalf("item with 2 retries ran %d times", n)
	}
}

func TestPmapRetryIfFalseStops(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 1)
	key := newKey(t)
	var asked []error
	_, err := dist.Pmap(ctx, c, pmFlaky, []flakyArg{{Key: key, I: 0, Fail: 1}},
		dist.WithRetry(5, nil, func(err error) bool {
			asked = append(asked, err)
			return !strings.Contains(err.Error(), "flaky")
		}))
	var re *dist.RemoteError
	if !errors.As(err, &re) || re.Pid != 2 || re.Func != "pmaptest.flaky" {
		t.Fatalf("Pmap = %v", err)
	}
	if n := attempts(key, 0); n != 1 || len(asked) != 1 {
		t.Fatalf("ran %d times, retryIf asked %d times", n, len(asked))
	}
}

func TestPmapOnError(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	key := newKey(t)
	in := make([]flakyArg, 50)
	for i := range in {
		in[i] = flakyArg{Key: key, I: i}
		if i%7 == 0 {
			in[i].Fail = 100
		}
	}
	var failed []int
	var mu sync.Mutex
	out, err := dist.Pmap(ctx, c, pmFlaky, in, dist.WithOnError(func(a flakyArg, err error) (int, error) {
		var re *dist.RemoteError
		if !errors.As(err, &re) {
			return 0, fmt.Errorf("unexpected error type: %w", err)
		}
		mu.Lock()
		failed = append(failed, a.I)
		mu.Unlock()
		return -1, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		want := i
		if i%7 == 0 {
			want = -1
		}
		if v != want {
			t.Fatalf("out[%d] = %d, want %d", i, v, want)
		}
	}
	slices.Sort(failed)
	if !slices.Equal(failed, []int{0, 7, 14, 21, 28, 35, 42, 49}) {
		t.Fatalf("OnError called for %v", failed)
	}

	// An error from OnError fails the Pmap with it.
	sentinel := errors.New("give up")
	_, err = dist.Pmap(ctx, c, pmFlaky, in[:8], dist.WithOnError(func(a flakyArg, err error) (int, error) { return 0, sentinel }))
	if !errors.Is(err, sentinel) {
		t.Fatalf("OnError's error: %v", err)
	}
	// A handler of the wrong type is refused before anything runs.
	_, err = dist.Pmap(ctx, c, pmFlaky, in[:1], dist.WithOnError(func(a string, err error) (int, error) { return 0, nil }))
	if err == nil || !strings.Contains(err.Error(), "WithOnError") {
		t.Fatalf("mistyped OnError: %v", err)
	}
}

func TestPmapFirstErrorFails(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	key := newKey(t)
	in := make([]flakyArg, 100)
	for i := range in {
		in[i] = flakyArg{Key: key, I: i}
	}
	in[42].Fail = 1
	out, err := dist.Pmap(ctx, c, pmFlaky, in)
	var re *dist.RemoteError
	if out != nil || !errors.As(err, &re) || !strings.Contains(err.Error(), "item 42") {
		t.Fatalf("Pmap = %v, %v", out, err)
	}
}

func TestPmapLocal(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	in := make([]int, 5000)
	for i := range in {
		in[i] = i
	}
	// Without a cluster at all.
	var st dist.PmapStats
	out, err := dist.Pmap(ctx, nil, pmSquare, in, dist.WithLocal(), dist.WithStats(&st))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != i*i {
			t.Fatalf("out[%d] = %d", i, v)
		}
	}
	if st.Calls != 0 {
		t.Fatalf("local Pmap made %d calls", st.Calls)
	}
	// With a cluster: everything runs in the driver.
	c, _ := disttest.Start(t, 1)
	who, err := dist.Pmap(ctx, c, pmWho, in, dist.WithLocal(), dist.WithStats(&st))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range who {
		if r != [2]int{i, 1} {
			t.Fatalf("local result %d = %v", i, r)
		}
	}
	if st.Calls != 0 || st.ByWorker[1] != len(in) {
		t.Fatalf("stats %+v", st)
	}
	if _, err := dist.Pmap(ctx, nil, pmSquare, in); err == nil {
		t.Fatal("Pmap without a cluster nor WithLocal succeeded")
	}
}

func TestPmapCancel(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	before := map[int]int64{}
	for _, pid := range c.Workers() {
		n, err := pmCancelledN.Call(ctx, c, pid, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		before[pid] = n
	}
	in := make([]time.Duration, 100)
	for i := range in {
		in[i] = 20 * time.Second
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	out, err := dist.Pmap(cctx, c, pmSleep, in)
	if !errors.Is(err, context.Canceled) || out != nil {
		t.Fatalf("cancelled Pmap = %v, %v", out, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cancelled Pmap returned after %v", d)
	}
	// The items running on the workers saw the cancellation.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range c.Workers() {
		for {
			n, err := pmCancelledN.Call(ctx, c, pid, struct{}{})
			if err != nil {
				t.Fatal(err)
			}
			if n > before[pid] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("worker %d saw no cancellation", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The pool got its workers back: another Pmap runs at once.
	if _, err := dist.Pmap(ctx, c, pmSquare, []int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
}

// TestPmapWorkerKilled kills a worker in the middle of a Pmap: its unanswered items run on the
// others, and every item has exactly one result.
func TestPmapWorkerKilled(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 3)
	pmStartsMu.Lock()
	pmStarts = nil
	pmStartsMu.Unlock()
	const n = 40
	in := make([]loggedArg, n)
	for i := range in {
		in[i] = loggedArg{I: i, D: 100 * time.Millisecond}
	}
	// Items take 100 ms, so the kill lands in the middle of one.
	time.AfterFunc(350*time.Millisecond, func() { disttest.Kill(t, c, 3) })
	var st dist.PmapStats
	out, err := dist.Pmap(ctx, c, pmLogged, in, dist.WithStats(&st))
	if err != nil {
		t.Fatal(err)
	}
	pmStartsMu.Lock()
	starts := slices.Clone(pmStarts)
	pmStartsMu.Unlock()
	t.Logf("stats %+v", st)
	// Every item has a result from a worker that started it.
	started := map[[2]int]int{}
	for _, s := range starts {
		started[s]++
	}
	by := map[int]int{}
	for i, pid := range out {
		if started[[2]int{i, pid}] != 1 {
			t.Fatalf("item %d: result from %d, starts %v", i, pid, starts)
		}
		by[pid]++
	}
	if by[3] != st.ByWorker[3] || by[2]+by[3]+by[4] != n {
		t.Fatalf("results by pid %v, stats %v", by, st.ByWorker)
	}
	// Worker 3 died with items started and unanswered; they ran again elsewhere.
	rerun := 0
	for _, s := range starts {
		if s[1] == 3 && out[s[0]] != 3 {
			rerun++
		}
	}
	if rerun == 0 || st.Requeued == 0 {
		t.Fatalf("no item of the killed worker ran again (requeued %d, starts %v)", st.Requeued, starts)
	}
	if slices.Contains(c.DefaultPool().Workers(), 3) {
		t.Fatalf("dead worker still in the pool: %v", c.DefaultPool().Workers())
	}
}

func TestPmapWorkerAdded(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 1)
	in := make([]time.Duration, 40)
	for i := range in {
		in[i] = 50 * time.Millisecond
	}
	added := make(chan []int, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		pids, err := c.AddProcs(ctx, nil, 1)
		if err != nil {
			t.Error(err)
		}
		added <- pids
	}()
	out, err := dist.Pmap(ctx, c, pmSleep, in)
	if err != nil {
		t.Fatal(err)
	}
	pids := <-added
	if len(pids) != 1 {
		t.Fatalf("AddProcs = %v", pids)
	}
	n := 0
	for _, pid := range out {
		if pid == pids[0] {
			n++
		}
	}
	t.Logf("new worker %d ran %d of %d items", pids[0], n, len(in))
	if n == 0 {
		t.Fatalf("the worker added during the Pmap ran nothing: %v", out)
	}
}

// TestPmapNoWorkersLeft: a pool whose every worker dies fails the Pmap instead of hanging.
func TestPmapNoWorkersLeft(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	pool := dist.NewWorkerPool(c, 3)
	in := make([]time.Duration, 20)
	for i := range in {
		in[i] = 50 * time.Millisecond
	}
	time.AfterFunc(200*time.Millisecond, func() { disttest.Kill(t, c, 3) })
	_, err := dist.Pmap(ctx, c, pmSleep, in, dist.WithPool(pool))
	if !errors.Is(err, dist.ErrNoWorkers) || !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("Pmap on a pool whose workers died: %v", err)
	}
	// Worker 2, outside that pool, was never used and still works.
	if out, err := dist.Pmap(ctx, c, pmWho, []int{7}); err != nil || out[0] != [2]int{7, 2} {
		t.Fatalf("default pool after: %v, %v", out, err)
	}
}

func TestPmapProgress(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	in := make([]int, 300)
	for i := range in {
		in[i] = i
	}
	// The summary: one line at the end.
	var buf bytes.Buffer
	out, err := dist.Pmap(ctx, c, pmSquare, in, dist.WithProgress(dist.ProgressSummary(&buf)))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != i*i {
			t.Fatalf("out[%d] = %d", i, v)
		}
	}
	line := buf.String()
	if !strings.HasPrefix(line, "pmap pmaptest.square: 300/300 items in ") || strings.Count(line, "\n") != 1 || strings.Contains(line, "\x1b") {
		t.Fatalf("summary %q", line)
	}

	// What a Progress is told: every item once, by the worker that ran it, then the end.
	rec := &recordProgress{}
	if _, err := dist.Pmap(ctx, c, pmSquare, in, dist.WithProgress(rec)); err != nil {
		t.Fatal(err)
	}
	if rec.name != "pmaptest.square" || rec.total != 300 || rec.ends != 1 || rec.endErr != nil || rec.lateDone {
		t.Fatalf("recorded %+v", rec)
	}
	sum := 0
	for pid, n := range rec.by {
		if pid != 2 && pid != 3 {
			t.Errorf("%d items done by pid %d", n, pid)
		}
		sum += n
	}
	if sum != 300 {
		t.Fatalf("%d items reported done, want 300 (%v)", sum, rec.by)
	}
	// A failed run ends with its error.
	rec = &recordProgress{}
	_, err = dist.Pmap(ctx, c, pmFlaky, []flakyArg{{Key: t.Name(), Fail: 5}}, dist.WithProgress(rec))
	if err == nil || rec.ends != 1 || rec.endErr == nil || rec.endErr.Error() != err.Error() {
		t.Fatalf("failed run: Pmap %v, progress ended %d times with %v", err, rec.ends, rec.endErr)
	}
}

// recordProgress records what one run of Pmap tells its Progress.
type recordProgress struct {
	mu       sync.Mutex
	name     string
	total    int
	by       map[int]int
	ends     int
	endErr   error
	lateDone bool // Done after End
}

func (p *recordProgress) Begin(name string, total int) dist.ProgressRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.name, p.total, p.by = name, total, make(map[int]int)
	return p
}

func (p *recordProgress) Done(pid, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.by[pid] += n
	p.lateDone = p.lateDone || p.ends > 0
}

func (p *recordProgress) End(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ends++
	p.endErr = err
}

func TestWorkerPoolFollowsMembership(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	p := c.DefaultPool()
	if p != c.DefaultPool() {
		t.Fatal("DefaultPool is not one pool")
	}
	if got := p.Workers(); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("default pool %v", got)
	}
	added, err := c.AddProcs(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Workers(); !slices.Equal(got, []int{2, 3, added[0]}) {
		t.Fatalf("default pool after AddProcs %v", got)
	}
	// Take everything; a taken worker that dies is not put back.
	var taken []int
	for range 3 {
		pid, err := p.Take(ctx)
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, pid)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := p.Take(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take on a busy pool: %v", err)
	}
	cancel()
	disttest.Kill(t, c, 3)
	if err := disttest.WaitGone(c, 3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, pid := range taken {
		p.Put(pid)
	}
	if got := p.Workers(); !slices.Equal(got, []int{2, added[0]}) || p.Idle() != 2 {
		t.Fatalf("pool after a taken worker died: %v, %d idle", got, p.Idle())
	}
	// A user pool: Add ignores dead pids; emptied, Take fails instead of waiting forever.
	up := dist.NewWorkerPool(c, 2, 3)
	if got := up.Workers(); !slices.Equal(got, []int{2}) {
		t.Fatalf("NewWorkerPool(2, 3) = %v", got)
	}
	up.Remove(2)
	if _, err := up.Take(ctx); !errors.Is(err, dist.ErrNoWorkers) {
		t.Fatalf("Take on an empty pool: %v", err)
	}
}

// The default pool whose last worker has gone takes in the driver, as Workers does, as soon as
// the worker has left Procs, not only once its Exited event comes.
func TestDefaultPoolLastWorkerGone(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 1)
	p := c.DefaultPool()
	disttest.Kill(t, c, 2)
	if err := disttest.WaitGone(c, 2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	pid, err := p.Take(ctx)
	if err != nil || pid != 1 {
		t.Fatalf("Take on the default pool after its last worker went: %d, %v", pid, err)
	}
	p.Put(pid)
	if got := p.Workers(); !slices.Equal(got, []int{1}) {
		t.Fatalf("default pool %v, want [1]", got)
	}
}

func TestRemote(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	p := dist.NewWorkerPool(c, c.Workers()...)
	seen := map[int]int{}
	for i := range 4 {
		r, err := dist.Remote(ctx, p, pmWho, i)
		if err != nil || r[0] != i {
			t.Fatalf("Remote = %v, %v", r, err)
		}
		seen[r[1]]++
	}
	if seen[2] != 2 || seen[3] != 2 {
		t.Fatalf("Remote on a pool of free workers went to %v", seen)
	}
	// Errors and panics give the worker back.
	if _, err := dist.Remote(ctx, p, boom, "remote panic"); err == nil {
		t.Fatal("panic not reported")
	}
	if _, err := dist.Remote(ctx, p, fail, "remote error"); err == nil {
		t.Fatal("error not reported")
	}
	if p.Idle() != 2 {
		t.Fatalf("%d idle after failed calls, want 2", p.Idle())
	}
	// Concurrent callers share the two workers, never more than two at a time.
	var wg sync.WaitGroup
	start := time.Now()
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := dist.Remote(ctx, p, pmSleep, 100*time.Millisecond); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("6 calls of 100ms on 2 workers took %v", d)
	}
	// A worker that dies during the call is not put back.
	errc := make(chan error, 1)
	pid, err := p.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := 5 - pid
	go func() { _, err := dist.Remote(ctx, p, pmSleep, 10*time.Second); errc <- err }()
	time.Sleep(200 * time.Millisecond)
	disttest.Kill(t, c, other)
	if err := <-errc; !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("call on killed worker: %v", err)
	}
	p.Put(pid)
	if got := p.Workers(); !slices.Equal(got, []int{pid}) {
		t.Fatalf("pool after the death: %v", got)
	}
}

// TestPmapAlone: with no workers, the default pool holds the driver, as Workers does, so the
// same code runs alone; a worker added later replaces it.
func TestPmapAlone(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 0)
	if got := c.DefaultPool().Workers(); !slices.Equal(got, []int{1}) {
		t.Fatalf("default pool alone: %v", got)
	}
	out, err := dist.Pmap(ctx, c, pmWho, []int{0, 1, 2})
	if err != nil || !slices.Equal(out, [][2]int{{0, 1}, {1, 1}, {2, 1}}) {
		t.Fatalf("Pmap alone = %v, %v", out, err)
	}
	pids, err := c.AddProcs(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.DefaultPool().Workers(); !slices.Equal(got, pids) {
		t.Fatalf("default pool after AddProcs: %v", got)
	}
	out, err = dist.Pmap(ctx, c, pmWho, []int{0, 1, 2})
	if err != nil || !slices.Equal(out, [][2]int{{0, 2}, {1, 2}, {2, 2}}) {
		t.Fatalf("Pmap with a worker = %v, %v", out, err)
	}
}
