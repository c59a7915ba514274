package dist_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// mappable decodes like a value whose decoder needs something of the receiving process, as
// shm's arrays map their memory: when Fail is set, its decoder fails although the data has
// the right shape.
type mappable struct {
	Fail bool
	N    int
}

var errNotMappable = errors.New("test: cannot map")

func (m *mappable) UnmarshalCBOR(b []byte) error {
	type plain mappable // without the method
	var p plain
	if err := cbor.Unmarshal(b, &p); err != nil {
		return err // the data does not fit: a mismatch
	}
	if p.Fail {
		return fmt.Errorf("%w: the segment is gone", errNotMappable)
	}
	*m = mappable(p)
	return nil
}

var (
	useMappable = dist.NewFunc("test.decode.use", func(ctx context.Context, m mappable) (int, error) {
		return m.N, nil
	})
	makeMappable = dist.NewFunc("test.decode.make", func(ctx context.Context, fail bool) (mappable, error) {
		return mappable{Fail: fail, N: 7}, nil
	})
)

func TestDecoderFailureIsNotTypeMismatch(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 1)
	if n, err := useMappable.Call(ctx, c, 2, mappable{N: 5}); err != nil || n != 5 {
		t.Fatalf("a value that decodes: %d, %v", n, err)
	}
	// The argument's decoder fails on the worker: the driver is told why, not "type mismatch".
	_, err := useMappable.Call(ctx, c, 2, mappable{Fail: true})
	var re *dist.RemoteError
	if errors.Is(err, dist.ErrTypeMismatch) || !errors.As(err, &re) || re.Pid != 2 ||
		!strings.Contains(err.Error(), "argument of test.decode.use") || !strings.Contains(err.Error(), "test: cannot map: the segment is gone") {
		t.Fatalf("argument whose decoder fails: %v", err)
	}
	// The result's decoder fails here: its error is the cause, still matched by errors.Is.
	if _, err := makeMappable.Call(ctx, c, 2, true); !errors.Is(err, errNotMappable) || errors.Is(err, dist.ErrTypeMismatch) ||
		!strings.Contains(err.Error(), "result of test.decode.make") {
		t.Fatalf("result whose decoder fails: %v", err)
	}
	if _, err := dist.Pmap(ctx, c, makeMappable, []bool{false, true}); !errors.Is(err, errNotMappable) || errors.Is(err, dist.ErrTypeMismatch) {
		t.Fatalf("Pmap result whose decoder fails: %v", err)
	}
	// Data that does not fit stays a type mismatch, also where the type has its own decoder.
	if _, err := c.CallByName(ctx, 2, "test.decode.use", "not a struct"); !errors.Is(err, dist.ErrTypeMismatch) {
		t.Fatalf("a string for a mappable: %v", err)
	}
	if _, err := c.CallByName(ctx, 2, "test.square", "not an int"); !errors.Is(err, dist.ErrTypeMismatch) {
		t.Fatalf("a string for an int: %v", err)
	}
	if _, err := c.CallByName(ctx, 2, "test.square", []float64{1, 2}); !errors.Is(err, dist.ErrTypeMismatch) {
		t.Fatalf("a raw slice for an int: %v", err)
	}
}
