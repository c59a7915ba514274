package wire

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestBudgetBoundsStalledFrames has four peers announce frames of 6 MiB each, into a budget
// of 8 MiB, and send nothing more: at most one is claimed at a time, each connection is
// closed as stalled, and a frame larger than the whole budget is refused at once.
func TestBudgetBoundsStalledFrames(t *testing.T) {
	b := NewBudget(8 << 20)
	lim := DefaultLimits
	lim.Budget, lim.Stall = b, 100*time.Millisecond
	const n = 4
	errs := make(chan error, n+1)
	announce := func(raw uint64) {
		ours, theirs := UnixPair(t)
		NewConn(ours, lim, func(*Conn, *Frame) {}, func(err error) { errs <- err })
		var h [HeaderSize]byte
		PutHeader(h[:], Header{Kind: KindRequest, Raw: RawBytes, RawLen: raw, ID: 1})
		if _, err := theirs.Write(h[:]); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		announce(6 << 20)
	}
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "stalled") {
				t.Fatalf("connection ended with %v, want a stalled sender", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("stalled connections still open")
		}
	}
	if p := b.Peak(); p > b.Limit() {
		t.Fatalf("peak claim %d, budget %d", p, b.Limit())
	}
	announce(16 << 20)
	select {
	case err := <-errs:
		if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "receive budget") {
			t.Fatalf("a frame beyond the budget: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a frame beyond the budget was not refused")
	}
}
