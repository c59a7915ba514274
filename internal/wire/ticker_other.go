//go:build !linux

package wire

import "time"

// ticker wakes the monitor; elsewhere than Linux it is a plain Go ticker.
type ticker struct{ gt *time.Ticker }

func newTicker(d time.Duration) *ticker { return &ticker{time.NewTicker(d)} }

// reset makes the ticker fire every d from now on; 0 stops it.
func (t *ticker) reset(d time.Duration) {
	if d == 0 {
		t.gt.Stop()
		return
	}
	t.gt.Reset(d)
}

func (t *ticker) stop()  { t.reset(0) }
func (t *ticker) wait()  { <-t.gt.C }
func (t *ticker) close() { t.gt.Stop() }
