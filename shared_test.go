package dist_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// sharedItem is one item of a Pmap over a large shared array.
type sharedItem struct {
	Data *dist.Shared[[]float64]
	I    int
}

var (
	// pmSharedAt returns element I*1000 of the shared array, and its length.
	pmSharedAt = dist.NewFunc("pmaptest.sharedat", func(ctx context.Context, it sharedItem) ([2]float64, error) {
		xs, err := it.Data.Get(ctx)
		if err != nil {
			return [2]float64{}, err
		}
		return [2]float64{xs[it.I*1000], float64(len(xs))}, nil
	})
	// pmShareHere shares a value from the worker it runs on.
	pmShareHere = dist.NewFunc("pmaptest.sharehere", func(ctx context.Context, n int) (*dist.Shared[[]int64], error) {
		xs := make([]int64, n)
		for i := range xs {
			xs[i] = int64(i) * 3
		}
		s, err := dist.Share(ctx, dist.Current(ctx), xs)
		if err != nil {
			return nil, err
		}
		pmKept.Store(s) // kept until the test releases it
		return s, nil
	})
	pmReleaseKept = dist.NewFunc("pmaptest.releasekept", func(ctx context.Context, _ struct{}) (int, error) {
		s := pmKept.Load()
		n := s.Fetches()
		s.Release()
		return n, nil
	})
	pmSumShared = dist.NewFunc("pmaptest.sumshared", func(ctx context.Context, s *dist.Shared[[]int64]) (int64, error) {
		xs, err := s.Get(ctx)
		if err != nil {
			return 0, err
		}
		var sum int64
		for _, x := range xs {
			sum += x
		}
		return sum, nil
	})
)

var pmKept atomic.Pointer[dist.Shared[[]int64]]

// TestSharedCrossesOncePerWorker: 200 items use one 8 MiB array; it goes to each worker once.
func TestSharedCrossesOncePerWorker(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	xs := make([]float64, 1<<20) // 8 MiB
	for i := range xs {
		xs[i] = float64(i) / 2
	}
	sh, err := dist.Share(ctx, c, xs)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Release()
	in := make([]sharedItem, 200)
	for i := range in {
		in[i] = sharedItem{Data: sh, I: i}
	}
	var st dist.PmapStats
	// Batches of 5 items: at least 40 calls, each of which would carry the array if it
	// travelled with the items.
	out, err := dist.Pmap(ctx, c, pmSharedAt, in, dist.WithBatchSize(5), dist.WithStats(&st))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range out {
		if r[0] != float64(i*1000)/2 || r[1] != float64(len(xs)) {
			t.Fatalf("item %d = %v", i, r)
		}
	}
	used := 0
	for pid, n := range st.ByWorker {
		if pid != 1 && n > 0 {
			used++
		}
	}
	t.Logf("%d calls, items by worker %v, %d fetches of the array", st.Calls, st.ByWorker, sh.Fetches())
	if sh.Fetches() != used || used == 0 {
		t.Fatalf("the array was sent %d times for %d workers", sh.Fetches(), used)
	}
	// A second Pmap with the same handle uses the caches: nothing more is sent.
	if _, err := dist.Pmap(ctx, c, pmSharedAt, in, dist.WithBatchSize(5)); err != nil {
		t.Fatal(err)
	}
	if sh.Fetches() != used {
		t.Fatalf("second Pmap fetched again: %d fetches", sh.Fetches())
	}
	// In the owner, Get is the value itself.
	if v, err := sh.Get(ctx); err != nil || &v[0] != &xs[0] {
		t.Fatalf("owner Get copied or failed: %v", err)
	}
}

func TestSharedRelease(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	sh, err := dist.Share(ctx, c, []float64{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	item := sharedItem{Data: sh, I: 0}
	for _, pid := range c.Workers() {
		if v, err := pmSharedAt.Call(ctx, c, pid, item); err != nil || v != [2]float64{1, 4} {
			t.Fatalf("worker %d: %v, %v", pid, v, err)
		}
	}
	sh.Release()
	sh.Release() // idempotent
	if _, err := sh.Get(ctx); !errors.Is(err, dist.ErrReleased) {
		t.Fatalf("owner Get after Release: %v", err)
	}
	// The workers' caches are dropped: their next Get asks the owner, which refuses.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range c.Workers() {
		for {
			_, err := pmSharedAt.Call(ctx, c, pid, item)
			if errors.Is(err, dist.ErrReleased) {
				break
			}
			if err != nil || time.Now().After(deadline) {
				t.Fatalf("worker %d after Release: %v", pid, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestSharedOwnedByWorker: a worker shares, the driver passes the handle on, another worker
// fetches from the first; the owner's exit drops the caches.
func TestSharedOwnedByWorker(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 3)
	sh, err := pmShareHere.Call(ctx, c, 2, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if sh.Owner() != 2 {
		t.Fatalf("owner %d", sh.Owner())
	}
	const want = int64(3 * 999 * 1000 / 2)
	for _, pid := range []int{3, 4, 3, 1} {
		if sum, err := pmSumShared.Call(ctx, c, pid, sh); err != nil || sum != want {
			t.Fatalf("sum on %d = %d, %v", pid, sum, err)
		}
	}
	if v, err := sh.Get(ctx); err != nil || len(v) != 1000 {
		t.Fatalf("driver Get: %d values, %v", len(v), err)
	}
	// 3, 4 and the driver fetched once each.
	if n, err := pmReleaseKept.Call(ctx, c, 2, struct{}{}); err != nil || n != 3 {
		t.Fatalf("fetches on the owner = %d, %v", n, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := pmSumShared.Call(ctx, c, 3, sh)
		if errors.Is(err, dist.ErrReleased) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker 3 after the owner released: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Another value of worker 2, cached on 3; then 2 dies.
	sh2, err := pmShareHere.Call(ctx, c, 2, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pmSumShared.Call(ctx, c, 3, sh2); err != nil {
		t.Fatal(err)
	}
	disttest.Kill(t, c, 2)
	if err := disttest.WaitGone(c, 2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, err := pmSumShared.Call(ctx, c, 3, sh2)
		if errors.Is(err, dist.ErrProcessExited) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker 3 after the owner died: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
