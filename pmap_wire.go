package dist

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// Batches travel as one raw byte slice, in a format of their own, so that no item is encoded
// twice and an item whose argument or result is a numeric slice keeps its raw form:
//
//	request: uvarint len(fn), fn, uvarint run, uvarint n, n × item
//	reply:   uvarint n, n × item, exec ns (8 bytes LE), lane wait ns (8 bytes LE)
//	item:    tag byte, uvarint len, bytes; tag 0 = CBOR value, a wire.RawKind = raw value,
//	         pmapTagErr = CBOR error record (replies only), pmapTagBoth = a value with both
//	         parts (numeric slices of a struct out of band): uvarint len(CBOR), CBOR, raw
const (
	fnPmapBatch = "_dist.pmap.batch"
	pmapTagErr  = 0xff
	pmapTagBoth = 0xfe
)

func appendPmapHeader(b []byte, fn string, run uint64, n int) []byte {
	b = binary.AppendUvarint(b, uint64(len(fn)))
	b = append(b, fn...)
	b = binary.AppendUvarint(b, run)
	return binary.AppendUvarint(b, uint64(n))
}

func appendPmapItem(b []byte, m wire.Msg) []byte {
	if m.RawKind != wire.RawNone && len(m.CBOR) > 0 {
		var lb [binary.MaxVarintLen64]byte
		n := binary.PutUvarint(lb[:], uint64(len(m.CBOR)))
		b = append(b, pmapTagBoth)
		b = binary.AppendUvarint(b, uint64(n+len(m.CBOR)+len(m.Raw)))
		b = append(b, lb[:n]...)
		b = append(b, m.CBOR...)
		return append(b, m.Raw...)
	}
	if m.RawKind != wire.RawNone {
		return appendPmapTagged(b, byte(m.RawKind), m.Raw)
	}
	return appendPmapTagged(b, 0, m.CBOR)
}

func appendPmapTagged(b []byte, tag byte, data []byte) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(data)))
	return append(b, data...)
}

var errPmapFormat = fmt.Errorf("%w: malformed pmap batch", ErrTypeMismatch)

type pmapItem struct {
	kind wire.RawKind
	data []byte
	raw  []byte // pmapTagBoth: the raw part (data is then the CBOR)
	err  error  // replies: the item's error
}

// rawValue is the item's raw part as codec.Decode takes it, or nil. It is a copy: the decoded
// value may keep it, and must not keep the whole batch alive.
func (it pmapItem) rawValue() any {
	switch {
	case it.raw != nil:
		_, b := wire.MakeRaw(wire.RawBytes, len(it.raw))
		copy(b, it.raw)
		return b
	case it.kind != wire.RawNone:
		v, b := wire.MakeRaw(it.kind, len(it.data)/it.kind.Size())
		copy(b, it.data)
		return v
	}
	return nil
}

// pmapReader reads the batch format, checking every length against what is left.
type pmapReader struct {
	b   []byte
	err error
}

func (rd *pmapReader) uvarint() uint64 {
	if rd.err != nil {
		return 0
	}
	v, n := binary.Uvarint(rd.b)
	if n <= 0 {
		rd.err = errPmapFormat
		return 0
	}
	rd.b = rd.b[n:]
	return v
}

func (rd *pmapReader) bytes(n uint64) []byte {
	if rd.err != nil {
		return nil
	}
	if n > uint64(len(rd.b)) {
		rd.err = errPmapFormat
		return nil
	}
	s := rd.b[:n:n]
	rd.b = rd.b[n:]
	return s
}

// items reads a count and that many items; each item takes at least two bytes, which bounds
// the count by the input's size before anything is allocated.
func (rd *pmapReader) items(allowErr bool) []pmapItem {
	n := rd.uvarint()
	if rd.err != nil || n > uint64(len(rd.b))/2 {
		rd.err = errPmapFormat
		return nil
	}
	items := make([]pmapItem, n)
	for k := range items {
		if len(rd.b) == 0 {
			rd.err = errPmapFormat
			return nil
		}
		tag := rd.b[0]
		rd.b = rd.b[1:]
		data := rd.bytes(rd.uvarint())
		if rd.err != nil {
			return nil
		}
		switch {
		case tag == 0:
		case tag == pmapTagErr && allowErr:
			var rec errRecord
			if err := codec.Unmarshal(data, &rec); err != nil {
				rd.err = errPmapFormat
				return nil
			}
			items[k].err = rec.toError()
		case wire.RawKind(tag).Size() > 0 && len(data)%wire.RawKind(tag).Size() == 0:
			items[k].kind = wire.RawKind(tag)
		case tag == pmapTagBoth:
			in := pmapReader{b: data}
			cbor := in.bytes(in.uvarint())
			if in.err != nil || len(cbor) == 0 {
				rd.err = errPmapFormat
				return nil
			}
			items[k].kind, items[k].raw, data = wire.RawBytes, in.b, cbor
		default:
			rd.err = errPmapFormat
			return nil
		}
		items[k].data = data
	}
	return items
}

type pmapReply struct {
	items      []pmapItem
	exec, wait time.Duration
}

func parsePmapReply(b []byte, want int) (pmapReply, error) {
	if len(b) < 16 {
		return pmapReply{}, errPmapFormat
	}
	rd := pmapReader{b: b[:len(b)-16]}
	rep := pmapReply{items: rd.items(true)}
	if rd.err == nil && (len(rd.b) != 0 || len(rep.items) != want) {
		rd.err = errPmapFormat
	}
	t := b[len(b)-16:]
	rep.exec = time.Duration(binary.LittleEndian.Uint64(t))
	rep.wait = time.Duration(binary.LittleEndian.Uint64(t[8:]))
	return rep, rd.err
}

// pmapLanes make the batches of one run execute one at a time on a worker, in the order they
// arrive, although several are in flight to hide the round trip.
type pmapLaneKey struct {
	from int
	run  uint64
}

type pmapLane struct {
	sem   chan struct{}
	users int
}

var pmapLanes = struct {
	sync.Mutex
	m map[pmapLaneKey]*pmapLane
}{m: make(map[pmapLaneKey]*pmapLane)}

func pmapEnterLane(ctx context.Context, k pmapLaneKey) (leave func(), err error) {
	pmapLanes.Lock()
	l := pmapLanes.m[k]
	if l == nil {
		l = &pmapLane{sem: make(chan struct{}, 1)}
		pmapLanes.m[k] = l
	}
	l.users++
	pmapLanes.Unlock()
	out := func() {
		pmapLanes.Lock()
		l.users--
		if l.users == 0 {
			delete(pmapLanes.m, k)
		}
		pmapLanes.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
		return func() { <-l.sem; out() }, nil
	case <-ctx.Done():
		out()
		return nil, ctx.Err()
	}
}

func init() {
	rawBuiltin(fnPmapBatch, servePmapBatch)
}

// servePmapBatch runs a batch of items through the handler registered under the batch's
// function name, so that any function registered with NewFunc can be batched without a
// registration of its own.
func servePmapBatch(ctx context.Context, c *Cluster, fr *wire.Frame, _ []byte) (wire.Msg, error) {
	payload, ok := fr.Raw.([]byte)
	if !ok {
		return wire.Msg{}, errPmapFormat
	}
	rd := pmapReader{b: payload}
	fn := string(rd.bytes(rd.uvarint()))
	run := rd.uvarint()
	items := rd.items(false)
	if rd.err == nil && len(rd.b) != 0 {
		rd.err = errPmapFormat
	}
	if rd.err != nil {
		return wire.Msg{}, rd.err
	}
	h, ok := lookup(fn)
	if !ok {
		return wire.Msg{}, fmt.Errorf("%w %q on process %d (is its NewFunc at package level, and is the binary the same?)", ErrUnknownFunc, fn, c.MyID())
	}
	t := time.Now()
	leave, err := pmapEnterLane(ctx, pmapLaneKey{CallerPid(ctx), run})
	if err != nil {
		return wire.Msg{}, err
	}
	defer leave()
	wait := time.Since(t)
	t = time.Now()
	out := binary.AppendUvarint(make([]byte, 0, len(payload)+16+4*len(items)), uint64(len(items)))
	var ifr wire.Frame // reused: handlers do not keep the frame
	for _, it := range items {
		var m wire.Msg
		err := ctx.Err()
		if err == nil {
			ifr.Raw = it.rawValue()
			arg := it.data
			if it.kind != wire.RawNone && it.raw == nil {
				arg = nil // the value is the raw part
			}
			m, err = h(ctx, &ifr, arg)
		}
		if err != nil {
			rec, merr := codec.Marshal(recordOf(c.MyID(), fn, err))
			if merr != nil {
				rec, _ = codec.Marshal(&errRecord{Pid: c.MyID(), Func: fn, Msg: err.Error()})
			}
			out = appendPmapTagged(out, pmapTagErr, rec)
			continue
		}
		out = appendPmapItem(out, m)
	}
	out = binary.LittleEndian.AppendUint64(out, uint64(time.Since(t)))
	out = binary.LittleEndian.AppendUint64(out, uint64(wait))
	return wire.Msg{RawKind: wire.RawBytes, Raw: out, RawValue: out}, nil
}
