package dist_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// ownedChunk says which process ran which chunk.
type ownedChunk struct {
	Pid int
	R   dist.Range
}

var (
	chunkOwner = dist.NewFunc("test.reduce.owner", func(ctx context.Context, r dist.Range) ([]ownedChunk, error) {
		return []ownedChunk{{Pid: dist.Current(ctx).MyID(), R: r}}, nil
	})
	// failAtZero panics in the chunk holding 0; every other chunk waits for cancellation, so
	// Reduce only returns early if it cancels them.
	failAtZero = dist.NewFunc("test.reduce.failatzero", func(ctx context.Context, r dist.Range) (int, error) {
		if r.Lo <= 0 && 0 < r.Hi {
			panic("zero in my chunk")
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(30 * time.Second):
			return 0, nil
		}
	})
	// slowSum announces its chunk on stdout, sleeps, and sums the chunk.
	slowSum = dist.NewFunc("test.reduce.slowsum", func(ctx context.Context, r dist.Range) (int64, error) {
		fmt.Printf("slowsum %v started\n", r)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(1500 * time.Millisecond):
		}
		var s int64
		for i := r.Lo; i < r.Hi; i++ {
			s += int64(i)
		}
		return s, nil
	})
	// gated waits until its process's gate is opened, then says where it ran.
	gated = dist.NewFunc("test.reduce.gated", func(ctx context.Context, r dist.Range) (struct{}, error) {
		select {
		case <-reduceGate:
		case <-ctx.Done():
			return struct{}{}, ctx.Err()
		}
		fmt.Printf("gated %v ran on %d\n", r, dist.Current(ctx).MyID())
		return struct{}{}, nil
	})
	openReduceGate = dist.NewFunc("test.reduce.opengate", func(ctx context.Context, _ struct{}) (struct{}, error) {
		reduceGateOnce.Do(func() { close(reduceGate) })
		return struct{}{}, nil
	})
	failFor = dist.NewFunc("test.reduce.failfor", func(ctx context.Context, r dist.Range) (struct{}, error) {
		return struct{}{}, fmt.Errorf("chunk %v refuses", r)
	})

	reduceGate     = make(chan struct{})
	reduceGateOnce sync.Once
)

func appendChunks(a, b []ownedChunk) []ownedChunk { return append(a, b...) }

func TestChunks(t *testing.T) {
	r := func(lo, hi int) dist.Range { return dist.Range{Lo: lo, Hi: hi} }
	for _, tc := range []struct {
		lo, hi, k int
		want      []dist.Range
	}{
		{0, 10, 3, []dist.Range{r(0, 4), r(4, 7), r(7, 10)}},
		{1, 200_000_001, 2, []dist.Range{r(1, 100_000_001), r(100_000_001, 200_000_001)}},
		{-5, 5, 4, []dist.Range{r(-5, -2), r(-2, 1), r(1, 3), r(3, 5)}},
		{0, 3, 5, []dist.Range{r(0, 1), r(1, 2), r(2, 3)}}, // fewer integers than parts
		{7, 8, 1, []dist.Range{r(7, 8)}},
		{4, 4, 3, nil},
		{5, 1, 3, nil},
	} {
		if got := dist.Chunks(tc.lo, tc.hi, tc.k); !slices.Equal(got, tc.want) {
			t.Errorf("Chunks(%d, %d, %d) = %v, want %v", tc.lo, tc.hi, tc.k, got, tc.want)
		}
	}
	// Properties, exhaustively over small cases.
	for lo := -3; lo <= 3; lo++ {
		for n := 0; n <= 40; n++ {
			for k := 1; k <= 12; k++ {
				cs := dist.Chunks(lo, lo+n, k)
				if len(cs) != min(n, k) {
					t.Fatalf("Chunks(%d, %d, %d): %d chunks", lo, lo+n, k, len(cs))
				}
				next := lo
				for i, c := range cs {
					if c.Lo != next || c.Len() < 1 {
						t.Fatalf("Chunks(%d, %d, %d) = %v: not contiguous or empty", lo, lo+n, k, cs)
					}
					if i > 0 && (c.Len() > cs[i-1].Len() || cs[0].Len()-c.Len() > 1) {
						t.Fatalf("Chunks(%d, %d, %d) = %v: sizes unbalanced", lo, lo+n, k, cs)
					}
					next = c.Hi
				}
				if n > 0 && next != lo+n {
					t.Fatalf("Chunks(%d, %d, %d) = %v: does not cover", lo, lo+n, k, cs)
				}
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Chunks with k = 0 did not panic")
		}
	}()
	dist.Chunks(0, 1, 0)
}

// TestReduceCoinFlips is the manual's `@distributed (+) for i = 1:200000000 Int(rand(Bool)) end`.
func TestReduceCoinFlips(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	c, _ := disttest.Start(t, 2)
	const n = 200_000_000
	start := time.Now()
	heads, err := dist.Reduce(ctx, c, 1, n+1, countHeads, func(a, b int64) int64 { return a + b })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d heads of %d flips on 2 workers in %v", heads, n, time.Since(start))
	// The count is binomial(n, 1/2): its standard deviation is sqrt(n)/2 ≈ 7071.
	if d := math.Abs(float64(heads) - n/2); d > 6*math.Sqrt(n)/2 {
		t.Fatalf("heads = %d, %.0f away from n/2", heads, d)
	}
	// The seeds come from the chunks, so the same split gives the same count.
	again, err := dist.Reduce(ctx, c, 1, n+1, countHeads, func(a, b int64) int64 { return a + b })
	if err != nil || again != heads {
		t.Fatalf("second run = %d, %v; first %d", again, err, heads)
	}
}

func TestReduceOneChunkPerWorkerInPidOrder(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 3)
	got, err := dist.Reduce(ctx, c, 0, 10, chunkOwner, appendChunks)
	if err != nil {
		t.Fatal(err)
	}
	want := []ownedChunk{
		{2, dist.Range{Lo: 0, Hi: 4}},
		{3, dist.Range{Lo: 4, Hi: 7}},
		{4, dist.Range{Lo: 7, Hi: 10}},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("chunks = %v, want %v", got, want)
	}
	// Fewer integers than workers: only the first workers get one each.
	got, err = dist.Reduce(ctx, c, 5, 7, chunkOwner, appendChunks)
	if err != nil || !slices.Equal(got, []ownedChunk{{2, dist.Range{Lo: 5, Hi: 6}}, {3, dist.Range{Lo: 6, Hi: 7}}}) {
		t.Fatalf("short range: %v, %v", got, err)
	}
	// OnProcs chooses the processes and their order; the driver may take part.
	got, err = dist.Reduce(ctx, c, 0, 4, chunkOwner, appendChunks, dist.OnProcs(4, 1))
	if err != nil || !slices.Equal(got, []ownedChunk{{4, dist.Range{Lo: 0, Hi: 2}}, {1, dist.Range{Lo: 2, Hi: 4}}}) {
		t.Fatalf("OnProcs(4, 1): %v, %v", got, err)
	}
	if _, err := dist.Reduce(ctx, c, 3, 3, chunkOwner, appendChunks); !errors.Is(err, dist.ErrEmptyRange) {
		t.Fatalf("empty range: %v", err)
	}
}

func TestReduceWithoutWorkersRunsInDriver(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 0)
	got, err := dist.Reduce(ctx, c, 0, 3, chunkOwner, appendChunks)
	if err != nil || !slices.Equal(got, []ownedChunk{{1, dist.Range{Lo: 0, Hi: 3}}}) {
		t.Fatalf("alone: %v, %v", got, err)
	}
}

func TestReduceFailureCancelsTheRest(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 3)
	start := time.Now()
	_, err := dist.Reduce(ctx, c, -4, 8, failAtZero, func(a, b int) int { return a + b })
	var re *dist.RemoteError
	if !errors.As(err, &re) || re.Pid != 3 || !strings.Contains(re.Msg, "zero in my chunk") {
		t.Fatalf("err = %v, want worker 3's panic", err)
	}
	if !strings.Contains(err.Error(), "[0, 4)") {
		t.Errorf("error does not name the chunk: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Reduce returned after %v: the other chunks were not cancelled", d)
	}
}

func TestReduceRerunsChunkOfDeadWorker(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, out := disttest.Start(t, 2)
	type res struct {
		sum int64
		err error
	}
	done := make(chan res, 1)
	go func() {
		s, err := dist.Reduce(ctx, c, 0, 1000, slowSum, func(a, b int64) int64 { return a + b })
		done <- res{s, err}
	}()
	if !out.WaitFor("From worker 3: slowsum [500, 1000) started", 20*time.Second) {
		t.Fatalf("worker 3 never started its chunk; output %q", out.String())
	}
	disttest.Kill(t, c, 3)
	r := <-done
	if r.err != nil || r.sum != 999*1000/2 {
		t.Fatalf("Reduce after a worker died = %d, %v; want %d", r.sum, r.err, 999*1000/2)
	}
	if !out.WaitFor("From worker 2: slowsum [500, 1000) started", 5*time.Second) {
		t.Fatalf("the lost chunk did not rerun on worker 2; output %q", out.String())
	}
}

func TestForReturnsAtOnceAndWaits(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, out := disttest.Start(t, 2)
	f := dist.For(ctx, c, 0, 10, gated)
	// The bodies are blocked on their gates, so the loop cannot be done yet.
	if f.Ready() {
		t.Fatal("For is ready before any chunk could run")
	}
	if _, err := openReduceGate.On(ctx, c, c.Workers(), struct{}{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"From worker 2: gated [0, 5) ran on 2", "From worker 3: gated [5, 10) ran on 3"} {
		if !out.WaitFor(line, 5*time.Second) {
			t.Errorf("missing %q in %q", line, out.String())
		}
	}
	if err := dist.For(ctx, c, 3, 3, gated).Wait(ctx); err != nil {
		t.Fatalf("empty For: %v", err)
	}
	var re *dist.RemoteError
	if err := dist.For(ctx, c, 0, 4, failFor).Wait(ctx); !errors.As(err, &re) || !strings.Contains(re.Msg, "refuses") {
		t.Fatalf("failing For: %v", err)
	}
}

func TestForCancel(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	lctx, cancel := context.WithCancel(ctx)
	f := dist.For(lctx, c, 0, 10, gated) // the gates stay shut
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := f.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled For: %v", err)
	}
}
