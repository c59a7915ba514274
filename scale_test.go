package dist_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

var (
	// workersSeen returns the workers as the worker it runs on sees them.
	workersSeen = dist.NewFunc("test.scale.workers", func(ctx context.Context, _ struct{}) ([]int, error) {
		return dist.Current(ctx).Workers(), nil
	})
	// stallOn counts its runs under the key, then waits on the process whose pid it is
	// given until its context ends, after saying so on stdout; everywhere else it returns
	// this process's pid at once.
	stallOn = dist.NewFunc("test.scale.stall", func(ctx context.Context, a stallArgs) (int, error) {
		runsMu.Lock()
		runs[a.Key]++
		runsMu.Unlock()
		me := dist.Current(ctx).MyID()
		fmt.Printf("ran %d\n", me)
		if me == a.Pid {
			fmt.Printf("stalling on %d\n", me)
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return me, nil
	})
	// runsOf returns how many times this process ran stallOn with the key.
	runsOf = dist.NewFunc("test.scale.runs", func(ctx context.Context, key string) (int, error) {
		runsMu.Lock()
		defer runsMu.Unlock()
		return runs[key], nil
	})
	runsMu sync.Mutex
	runs   = map[string]int{}
)

type stallArgs struct {
	Pid int
	Key string
}

// TestScale250 starts 250 workers and checks that membership costs O(N) messages: the driver
// counts every message it sends or answers to keep the membership (joins, lookups of a
// peer's address, followers' lists), and the count stays a small multiple of N through a
// start, calls to every process, worker-to-worker calls, a worker that reads the whole
// membership, a kill and a Close. Before, a start alone took N(N-1)/2 announcements.
func TestScale250(t *testing.T) {
	if testing.Short() {
		t.Skip("250 worker processes: not in -short runs")
	}
	const n = 250
	c, _ := disttest.Start(t, n, dist.WithLaunchTimeout(3*time.Minute))
	ctx := ctxT(t, 5*time.Minute)
	if got := c.NWorkers(); got != n {
		t.Fatalf("%d workers, want %d", got, n)
	}
	if got := c.Stats().MemberMsgs; got != n {
		t.Errorf("starting %d workers took %d membership messages, want one join each", n, got)
	}
	// Everywhere goes over a tree at this size.
	res, err := square.Everywhere(ctx, c, 7)
	if err != nil || len(res) != n+1 {
		t.Fatalf("Everywhere: %d results, %v", len(res), err)
	}
	for pid, v := range res {
		if v != 49 {
			t.Fatalf("Everywhere: %d from %d", v, pid)
		}
	}
	// Worker-to-worker calls on random pairs: each asks the driver once where its peer is.
	ws := c.Workers()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for range 10 {
		a, b := ws[r.IntN(len(ws))], ws[r.IntN(len(ws))]
		if v, err := relay.Call(ctx, c, a, [2]int{b, 6}); err != nil || v != 36 {
			t.Fatalf("relay %d→%d: %v, %v", a, b, v, err)
		}
	}
	// A worker that asks for the membership gets all of it, and follows it from then on.
	follower := ws[len(ws)/2]
	seen, err := workersSeen.Call(ctx, c, follower, struct{}{})
	if err != nil || !slices.Equal(seen, ws) {
		t.Fatalf("worker %d sees %d workers (%v), want %d", follower, len(seen), err, len(ws))
	}
	victim := ws[len(ws)-1]
	if victim == follower {
		t.Fatal("test set-up: the victim follows")
	}
	disttest.Kill(t, c, victim)
	if err := disttest.WaitGone(c, victim, time.Minute); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, time.Minute, "the follower to see the kill", func() bool {
		seen, err := workersSeen.Call(ctx, c, follower, struct{}{})
		return err == nil && len(seen) == n-1 && !slices.Contains(seen, victim)
	})
	if _, err := square.Call(ctx, c, victim, 2); !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("call to the killed worker: %v", err)
	}
	if res, err := square.Everywhere(ctx, c, 2); err != nil || len(res) != n {
		t.Fatalf("Everywhere after the kill: %d results, %v", len(res), err)
	}
	msgs := c.Stats().MemberMsgs
	t.Logf("membership messages for %d workers: %d", n, msgs)
	if msgs > 2*n {
		t.Errorf("%d membership messages for %d workers: more than O(N)", msgs, n)
	}
}

// TestTreeCallSurvivesInnerDeath kills a process in the middle of the tree while a call to
// every process is running: the call fails naming it, every other process's result comes
// back, and the processes below the dead one ran the function once.
func TestTreeCallSurvivesInnerDeath(t *testing.T) {
	if testing.Short() {
		t.Skip("60 worker processes: not in -short runs")
	}
	const n = 100
	c, out := disttest.Start(t, n)
	ctx := ctxT(t, 2*time.Minute)
	ws := c.Workers()
	// The lowest worker is the first child of the root: it forwards to the next few.
	victim := ws[0]
	key := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	type result struct {
		res map[int]int
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := stallOn.Everywhere(ctx, c, stallArgs{victim, key})
		done <- result{res, err}
	}()
	// Killed once it runs its part and the processes below it have run theirs.
	for _, s := range []string{fmt.Sprintf("stalling on %d", victim), fmt.Sprintf("ran %d\n", ws[1]), fmt.Sprintf("ran %d\n", ws[2])} {
		if !out.WaitFor(s, time.Minute) {
			t.Fatalf("no %q", s)
		}
	}
	disttest.Kill(t, c, victim)
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("Everywhere did not return after the kill")
	}
	var pe *dist.ProcessExitedError
	if !errors.As(r.err, &pe) || pe.Pid != victim {
		t.Fatalf("error %v, want the exit of %d", r.err, victim)
	}
	if len(r.res) != n { // every worker but the victim, and the driver
		t.Fatalf("%d results, want %d: %v", len(r.res), n, r.res)
	}
	for pid, v := range r.res {
		if v != pid {
			t.Fatalf("result %d from %d", v, pid)
		}
	}
	// Once per process, below the dead one too: its parent covered its subtree again,
	// and the processes there answered with the results they had sent the dead one.
	counts, err := runsOf.On(ctx, c, slices.DeleteFunc(c.Procs(), func(p int) bool { return p == victim }), key)
	if err != nil {
		t.Fatal(err)
	}
	for pid, k := range counts {
		if k != 1 {
			t.Fatalf("process %d ran the call %d times", pid, k)
		}
	}
}

var (
	// callAllAt waits until the given time, then calls square on every other worker at
	// once: with every worker doing so, pairs dial each other at the same moment.
	callAllAt = dist.NewFunc("test.scale.callall", func(ctx context.Context, a callAllArgs) (struct{}, error) {
		c := dist.Current(ctx)
		time.Sleep(time.Until(time.Unix(0, a.At)))
		errs := make(chan error, len(a.Pids))
		for _, p := range a.Pids {
			go func() {
				if p == c.MyID() {
					errs <- nil
					return
				}
				_, err := square.Call(ctx, c, p, 2)
				errs <- err
			}()
		}
		for range a.Pids {
			if err := <-errs; err != nil {
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
	})
	connsOf = dist.NewFunc("test.scale.conns", func(ctx context.Context, _ struct{}) (int, error) {
		return dist.Current(ctx).Stats().Conns, nil
	})
)

type callAllArgs struct {
	At   int64 // unix nanoseconds
	Pids []int
}

// TestCrossedDialsOneConnection has every worker call every other at the same moment, so
// that many pairs dial each other at once: each pair must end with one connection, so each
// worker with one per other worker and one to the driver.
func TestCrossedDialsOneConnection(t *testing.T) {
	const n = 12
	c, _ := disttest.Start(t, n)
	ctx := ctxT(t, time.Minute)
	ws := c.Workers()
	at := time.Now().Add(200 * time.Millisecond).UnixNano()
	if _, err := callAllAt.On(ctx, c, ws, callAllArgs{At: at, Pids: ws}); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 30*time.Second, "one connection per pair", func() bool {
		conns, err := connsOf.On(ctx, c, ws, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range conns {
			if k != n {
				return false
			}
		}
		return true
	})
}

// TestManyFollowers has every one of 40 workers follow the membership: a worker that joins
// and one that is killed afterwards reach every follower (pushed over the tree).
func TestManyFollowers(t *testing.T) {
	if testing.Short() {
		t.Skip("40 worker processes: not in -short runs")
	}
	c, _ := disttest.Start(t, 40)
	ctx := ctxT(t, 2*time.Minute)
	ws := c.Workers()
	if _, err := workersSeen.On(ctx, c, ws, struct{}{}); err != nil {
		t.Fatal(err)
	}
	added, err := c.AddProcs(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	victim := ws[3]
	disttest.Kill(t, c, victim)
	want := slices.DeleteFunc(append(slices.Clone(ws), added...), func(p int) bool { return p == victim })
	live := slices.DeleteFunc(slices.Clone(ws), func(p int) bool { return p == victim })
	disttest.Eventually(t, time.Minute, "every follower to see the join and the kill", func() bool {
		seen, err := workersSeen.On(ctx, c, live, struct{}{})
		if err != nil {
			return false
		}
		for _, s := range seen {
			if !slices.Equal(s, want) {
				return false
			}
		}
		return true
	})
}
