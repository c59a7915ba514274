//go:build !linux

package wire

import (
	"errors"
	"net"
	"sync/atomic"
)

// Rings need memfd and futexes: elsewhere, every raw part goes through the socket.

func ringsSupported(net.Conn) bool { return false }

var errNoRings = errors.New("shared-memory rings need Linux")

func newRingOut() (*ring, ringOffer, error)                 { return nil, ringOffer{}, errNoRings }
func openRingIn(net.Conn, uint64, ringOffer) (*ring, error) { return nil, errNoRings }
func unmapRing([]byte)                                      {}
func (r *ring) closeFD()                                    {}
func futexWait(*atomic.Uint32, uint32)                      {}
func futexWake(*atomic.Uint32)                              {}
func peerGone(net.Conn) bool                                { return false }
func releasePages([]byte)                                   {}
