package dist

// Unit tests of the data structures behind pools and Pmap, without processes or sockets. The
// tests on real workers are in pmap_test.go and shared_test.go.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

func TestWorkerPoolTakePut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := newWorkerPool(nil)
	p.Add(2, 3, 2)
	if got := p.Workers(); !slices.Equal(got, []int{2, 3}) || p.Len() != 2 || p.Idle() != 2 {
		t.Fatalf("Workers %v, Len %d, Idle %d", got, p.Len(), p.Idle())
	}
	a, _ := p.Take(ctx)
	b, _ := p.Take(ctx)
	if a != 2 || b != 3 || p.Idle() != 0 || p.Len() != 2 {
		t.Fatalf("took %d, %d; idle %d", a, b, p.Idle())
	}
	// A Take waits for a Put.
	got := make(chan int)
	go func() {
		pid, err := p.Take(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- pid
	}()
	select {
	case pid := <-got:
		t.Fatalf("Take returned %d from a busy pool", pid)
	case <-time.After(20 * time.Millisecond):
	}
	p.Put(3)
	if pid := <-got; pid != 3 {
		t.Fatalf("waiting Take got %d", pid)
	}
	// Put of a free or unknown pid changes nothing; a removed taken pid does not come back.
	p.Put(7)
	p.Remove(2)
	p.Put(2)
	if got := p.Workers(); !slices.Equal(got, []int{3}) || p.Idle() != 0 {
		t.Fatalf("after Remove of a taken pid: %v, idle %d", got, p.Idle())
	}
	p.Put(3)
	p.Put(3)
	if p.Idle() != 1 {
		t.Fatalf("double Put: idle %d", p.Idle())
	}
	// Removing the last member wakes waiters with ErrNoWorkers.
	_, _ = p.Take(ctx)
	errc := make(chan error)
	go func() { _, err := p.Take(ctx); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	p.Remove(3)
	if err := <-errc; !errors.Is(err, ErrNoWorkers) {
		t.Fatalf("Take on an emptied pool: %v", err)
	}
	short, cancel2 := context.WithTimeout(ctx, time.Millisecond)
	defer cancel2()
	p.Add(4)
	_, _ = p.Take(ctx)
	if _, err := p.Take(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take past the deadline: %v", err)
	}
}

func TestWorkerPoolConcurrent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := newWorkerPool(nil)
	p.Add(1, 2, 3)
	var mu sync.Mutex
	busy := map[int]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				pid, err := p.Take(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if busy[pid] {
					t.Errorf("pid %d taken twice", pid)
				}
				busy[pid] = true
				mu.Unlock()
				mu.Lock()
				busy[pid] = false
				mu.Unlock()
				p.Put(pid)
			}
		}()
	}
	wg.Wait()
	if p.Idle() != 3 {
		t.Fatalf("idle %d after the storm", p.Idle())
	}
}

func TestExitedDuring(t *testing.T) {
	pe := &ProcessExitedError{Pid: 3}
	cases := []struct {
		err  error
		pid  int
		want bool
	}{
		{nil, 3, false},
		{pe, 3, true},
		{pe, 2, false},
		{errors.Join(errors.New("x"), pe), 3, true},
		{&RemoteError{Pid: 2, cause: pe}, 3, false}, // 2 reports that 3 exited: 2 is fine
		{context.Canceled, 3, false},
	}
	for _, c := range cases {
		if got := exitedDuring(c.err, c.pid); got != c.want {
			t.Errorf("exitedDuring(%v, %d) = %v", c.err, c.pid, got)
		}
	}
}

func TestPmapBatchFormat(t *testing.T) {
	items := []any{42, "text", []float64{1.5, 2.5}, map[string]int{"a": 1}, []byte{}}
	b := appendPmapHeader(nil, "some.func", 77, len(items))
	for _, v := range items {
		m, err := codec.Encode(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		b = appendPmapItem(b, m)
	}
	rd := pmapReader{b: b}
	fn := string(rd.bytes(rd.uvarint()))
	run := rd.uvarint()
	got := rd.items(false)
	if rd.err != nil || fn != "some.func" || run != 77 || len(got) != len(items) || len(rd.b) != 0 {
		t.Fatalf("parsed %q %d %d items, rest %d, %v", fn, run, len(got), len(rd.b), rd.err)
	}
	if got[2].kind != wire.RawFloat64 || len(got[2].data) != 16 || got[0].kind != wire.RawNone || got[4].kind != wire.RawBytes {
		t.Fatalf("kinds %v %v %v", got[0].kind, got[2].kind, got[4].kind)
	}
	// Every truncation and a few corruptions are refused, never a panic.
	for n := range len(b) {
		rd := pmapReader{b: b[:n]}
		rd.bytes(rd.uvarint())
		rd.uvarint()
		rd.items(false)
		if rd.err == nil {
			t.Fatalf("truncation at %d parsed", n)
		}
	}
	bad := [][]byte{
		{},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		appendPmapHeader(nil, "f", 1, 1<<40),
		append(appendPmapHeader(nil, "f", 1, 1), pmapTagErr, 1, 0), // an error in a request
		append(appendPmapHeader(nil, "f", 1, 1), byte(wire.RawFloat64), 3, 1, 2, 3),
		append(appendPmapHeader(nil, "f", 1, 1), 99, 0),
	}
	for i, in := range bad {
		rd := pmapReader{b: in}
		rd.bytes(rd.uvarint())
		rd.uvarint()
		rd.items(false)
		if rd.err == nil {
			t.Errorf("bad input %d accepted", i)
		}
	}
	if _, err := parsePmapReply([]byte{1, 2, 3}, 1); err == nil {
		t.Error("short reply accepted")
	}
}
