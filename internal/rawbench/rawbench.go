// Package rawbench measures the raw cost of moving bytes between two real
// processes of this machine, so that `godist bench` can put its own figures
// next to the floor that any Go RPC over the same kind of socket could reach.
//
// Every measurement that needs a second process re-executes the current
// binary (os.Executable) as a peer. Such binaries must therefore call
// ChildMain early in main (and in TestMain for test binaries).
package rawbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// msgSize is the ping-pong payload: small enough that the figure is pure
// per-message latency (syscalls, wake-ups), not bandwidth.
const msgSize = 64

// bulkChunk is the write size for Bulk: large enough that per-syscall
// overhead is negligible against the copy cost, like a big RPC payload.
const bulkChunk = 4 << 20

// PingPongResult holds round-trip latencies, so that callers can compare
// both the typical (P50) and the tail (P99) cost of an RPC against the floor.
type PingPongResult struct {
	// P50 and P99 are nearest-rank percentiles, so each is a latency that
	// was actually observed rather than an interpolation.
	P50, P99 time.Duration
	// Rounds is the number of measured round trips (warm-up excluded), so a
	// report can tell how much weight the P99 carries.
	Rounds int
}

// PingPong starts a peer process (os.Executable() re-executed with
// GODIST_RAWBENCH_PEER set), connects to it over network "unix" (socket in a
// temp dir) or "tcp" (127.0.0.1, port 0), then does rounds round trips of a
// 64-byte message (write 64, peer echoes 64, read 64) after a warm-up, and
// returns percentiles. Plain blocking net.Conn Read/Write from one goroutine
// on each side: this is the floor a Go RPC over the same socket can reach.
func PingPong(ctx context.Context, network string, rounds int) (PingPongResult, error) {
	if rounds < 1 {
		return PingPongResult{}, fmt.Errorf("rawbench: ping-pong: rounds must be >= 1, got %d", rounds)
	}
	p, err := startPeer(ctx, network, modePingPong)
	if err != nil {
		return PingPongResult{}, err
	}
	res, err := runPingPong(ctx, p, rounds)
	cerr := p.close(err == nil)
	if err != nil {
		return PingPongResult{}, err
	}
	if cerr != nil {
		return PingPongResult{}, cerr
	}
	return res, nil
}

// warmupRounds is enough to fault in buffers, settle the scheduler and let
// the CPU clock up, without costing much for a short run.
func warmupRounds(rounds int) int {
	return min(max(rounds/10, 16), 1000)
}

func runPingPong(ctx context.Context, p *peer, rounds int) (PingPongResult, error) {
	pp := newPingPonger(p)
	for range warmupRounds(rounds) {
		if _, err := pp.Round(ctx); err != nil {
			return PingPongResult{}, err
		}
	}
	// Preallocate for ordinary runs only: a huge rounds meant as "until
	// ctx ends" must not reserve gigabytes up front.
	lat := make([]time.Duration, 0, min(rounds, 1<<20))
	for range rounds {
		d, err := pp.Round(ctx)
		if err != nil {
			return PingPongResult{}, err
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	return PingPongResult{
		P50:    percentile(lat, 0.50),
		P99:    percentile(lat, 0.99),
		Rounds: len(lat),
	}, nil
}

// PingPonger is a ping-pong peer kept running, so that a caller can alternate raw
// round trips with measurements of its own: both then see the same machine, which on a
// shared virtual machine changes speed from one second to the next.
type PingPonger struct {
	p       *peer
	n       uint64
	out, in []byte
}

// StartPingPong starts a peer as PingPong does and returns it ready for rounds.
func StartPingPong(ctx context.Context, network string) (*PingPonger, error) {
	p, err := startPeer(ctx, network, modePingPong)
	if err != nil {
		return nil, err
	}
	return newPingPonger(p), nil
}

func newPingPonger(p *peer) *PingPonger {
	return &PingPonger{p: p, out: make([]byte, msgSize), in: make([]byte, msgSize)}
}

// Round does one round trip of a 64-byte message and returns how long it took.
func (pp *PingPonger) Round(ctx context.Context) (time.Duration, error) {
	i := pp.n
	pp.n++
	binary.LittleEndian.PutUint64(pp.out, i)
	t0 := time.Now()
	if _, err := pp.p.conn.Write(pp.out); err != nil {
		return 0, pp.p.ioError(ctx, fmt.Sprintf("ping-pong write, round %d", i), err)
	}
	if _, err := io.ReadFull(pp.p.conn, pp.in); err != nil {
		return 0, pp.p.ioError(ctx, fmt.Sprintf("ping-pong read, round %d", i), err)
	}
	d := time.Since(t0)
	if got := binary.LittleEndian.Uint64(pp.in); got != i {
		return 0, fmt.Errorf("rawbench: ping-pong round %d: peer echoed message %d", i, got)
	}
	return d, nil
}

// Close stops the peer and waits until it has exited.
func (pp *PingPonger) Close() error { return pp.p.close(true) }

// percentile uses the nearest-rank method on sorted data so the result is
// always a latency that was actually observed.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Bulk starts a peer and streams total bytes from this process to the peer
// over network "unix" or "tcp" in 4 MiB writes (the peer reads into a buffer
// and discards, then acks with 1 byte at the end), and returns MB/s (1e6
// bytes per second) of the best of repeats runs. Best-of rather than mean
// because the floor is what a comparison needs, and noise only ever slows.
func Bulk(ctx context.Context, network string, total int64, repeats int) (float64, error) {
	if total < 1 {
		return 0, fmt.Errorf("rawbench: bulk: total must be >= 1 byte, got %d", total)
	}
	if repeats < 1 {
		return 0, fmt.Errorf("rawbench: bulk: repeats must be >= 1, got %d", repeats)
	}
	p, err := startPeer(ctx, network, modeBulk)
	if err != nil {
		return 0, err
	}
	best, err := runBulk(ctx, p, total, repeats)
	cerr := p.close(err == nil)
	if err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return best, nil
}

func runBulk(ctx context.Context, p *peer, total int64, repeats int) (float64, error) {
	b := newBulker(p, total)
	best := 0.0
	for range repeats {
		mb, err := b.Run(ctx)
		if err != nil {
			return 0, err
		}
		best = max(best, mb)
	}
	return best, nil
}

// Bulker is a bulk peer kept running, so that a caller can alternate raw transfers with
// transfers of its own (see PingPonger).
type Bulker struct {
	p     *peer
	total int64
	buf   []byte
	runs  int
}

// StartBulk starts a peer as Bulk does; each Run sends it total bytes.
func StartBulk(ctx context.Context, network string, total int64) (*Bulker, error) {
	if total < 1 {
		return nil, fmt.Errorf("rawbench: bulk: total must be >= 1 byte, got %d", total)
	}
	p, err := startPeer(ctx, network, modeBulk)
	if err != nil {
		return nil, err
	}
	return newBulker(p, total), nil
}

// StartArray is StartBulk for the memory traffic of moving an array: each Run sends total
// bytes from one buffer of that size, which the peer receives into one buffer of that size.
// Both buffers are reused from run to run (the first run faults the peer's in); unlike
// StartBulk's 4 MiB chunk, they do not stay in the processor's cache.
func StartArray(ctx context.Context, network string, total int64) (*Bulker, error) {
	if total < 1 || total > maxArray {
		return nil, fmt.Errorf("rawbench: array: total must be 1 byte to %d, got %d", int64(maxArray), total)
	}
	p, err := startPeer(ctx, network, modeArray)
	if err != nil {
		return nil, err
	}
	b := &Bulker{p: p, total: total, buf: make([]byte, total)}
	for i := range b.buf {
		b.buf[i] = byte(i)
	}
	return b, nil
}

func newBulker(p *peer, total int64) *Bulker {
	buf := make([]byte, bulkChunk)
	for i := range buf {
		buf[i] = byte(i) // fault the pages in outside the timed region
	}
	return &Bulker{p: p, total: total, buf: buf}
}

// Run sends the peer total bytes in chunks, waits for its acknowledgement, and returns the
// rate in MB/s (1e6 bytes per second).
func (b *Bulker) Run(ctx context.Context) (float64, error) {
	r := b.runs
	b.runs++
	var hdr [8]byte
	var ack [1]byte
	t0 := time.Now()
	binary.LittleEndian.PutUint64(hdr[:], uint64(b.total))
	if _, err := b.p.conn.Write(hdr[:]); err != nil {
		return 0, b.p.ioError(ctx, fmt.Sprintf("bulk run %d: write header", r), err)
	}
	for left := b.total; left > 0; {
		n := int(min(left, int64(len(b.buf))))
		if _, err := b.p.conn.Write(b.buf[:n]); err != nil {
			return 0, b.p.ioError(ctx, fmt.Sprintf("bulk run %d: write", r), err)
		}
		left -= int64(n)
	}
	if _, err := io.ReadFull(b.p.conn, ack[:]); err != nil {
		return 0, b.p.ioError(ctx, fmt.Sprintf("bulk run %d: read ack", r), err)
	}
	el := time.Since(t0)
	if ack[0] != bulkAck {
		return 0, fmt.Errorf("rawbench: bulk run %d: bad ack byte %#x", r, ack[0])
	}
	if el <= 0 {
		el = 1 // clock granularity: avoid +Inf
	}
	return float64(b.total) / el.Seconds() / 1e6, nil
}

// Close stops the peer and waits until it has exited.
func (b *Bulker) Close() error { return b.p.close(true) }

// Memcpy returns MB/s (1e6 bytes per second) of copy() between two []byte of
// size bytes, best of repeats: the in-process ceiling against which any
// cross-process transfer (which copies at least twice) can be judged.
// It returns 0 if size < 1; repeats < 1 counts as 1.
func Memcpy(size int, repeats int) float64 {
	if size < 1 {
		return 0
	}
	repeats = max(repeats, 1)
	src := make([]byte, size)
	dst := make([]byte, size)
	// Fill src with a pattern (so its pages are really mapped, not the
	// shared zero page) by doubling copies, far cheaper than a byte loop.
	for i := range min(4096, size) {
		src[i] = byte(i)
	}
	for n := 4096; n < size; n *= 2 {
		copy(src[n:], src[:n])
	}
	copy(dst, src) // fault dst in, so page faults are not timed
	// Small sizes are copied several times per timing so that the clock's
	// granularity does not dominate.
	inner := max(1, (64<<20)/size)
	best := 0.0
	for range repeats {
		t0 := time.Now()
		for range inner {
			copy(dst, src)
		}
		el := time.Since(t0)
		if el <= 0 {
			el = 1
		}
		best = max(best, float64(size)*float64(inner)/el.Seconds()/1e6)
	}
	return best
}

// errPeerGone tells apart "the peer died" from local socket trouble in
// error chains.
var errPeerGone = errors.New("peer process exited")
