package dist

import (
	"encoding/binary"
	"errors"
	"math"
)

// callHeader precedes the argument of every request. Being on every request, it is encoded
// by hand (as the CBOR array [Fn, Store, Timeout]) instead of by reflection, which cost a
// tenth of a call's CPU.
type callHeader struct {
	_       struct{} `cbor:",toarray"`
	Fn      string
	Store   uint64 // when not 0, the result is also kept under ref (caller, Store)
	Timeout int64  // nanoseconds left of the caller's deadline; 0 for none
}

func appendUint(b []byte, major byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(b, major<<5|byte(v))
	case v <= math.MaxUint8:
		return append(b, major<<5|24, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, major<<5|25), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, major<<5|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, major<<5|27), v)
}

func (h *callHeader) appendCBOR(b []byte) []byte {
	b = append(b, 0x83) // array of 3
	b = appendUint(b, 3, uint64(len(h.Fn)))
	b = append(b, h.Fn...)
	b = appendUint(b, 0, h.Store)
	if h.Timeout < 0 {
		return appendUint(b, 1, uint64(-1-h.Timeout))
	}
	return appendUint(b, 0, uint64(h.Timeout))
}

var errBadHeader = errors.New("dist: malformed call header")

func readUint(b []byte) (major byte, v uint64, rest []byte, err error) {
	if len(b) == 0 {
		return 0, 0, nil, errBadHeader
	}
	major, info := b[0]>>5, b[0]&31
	b = b[1:]
	switch {
	case info < 24:
		return major, uint64(info), b, nil
	case info == 24 && len(b) >= 1:
		return major, uint64(b[0]), b[1:], nil
	case info == 25 && len(b) >= 2:
		return major, uint64(binary.BigEndian.Uint16(b)), b[2:], nil
	case info == 26 && len(b) >= 4:
		return major, uint64(binary.BigEndian.Uint32(b)), b[4:], nil
	case info == 27 && len(b) >= 8:
		return major, binary.BigEndian.Uint64(b), b[8:], nil
	}
	return 0, 0, nil, errBadHeader
}

// parseCallHeader decodes a header written by appendCBOR and returns the bytes after it.
func parseCallHeader(b []byte) (callHeader, []byte, error) {
	var h callHeader
	if len(b) == 0 || b[0] != 0x83 {
		return h, nil, errBadHeader
	}
	major, n, b, err := readUint(b[1:])
	if err != nil || major != 3 || n > uint64(len(b)) || n > 1024 {
		return h, nil, errBadHeader
	}
	h.Fn, b = string(b[:n]), b[n:]
	major, h.Store, b, err = readUint(b)
	if err != nil || major != 0 {
		return h, nil, errBadHeader
	}
	major, t, b, err := readUint(b)
	switch {
	case err != nil || t > math.MaxInt64:
		return h, nil, errBadHeader
	case major == 0:
		h.Timeout = int64(t)
	case major == 1:
		h.Timeout = -1 - int64(t)
	default:
		return h, nil, errBadHeader
	}
	return h, b, nil
}
