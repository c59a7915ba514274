package dist

import (
	"context"
	"errors"
	"fmt"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// Names of the functions the runtime itself registers. They start with '_' so that they never
// clash with user functions.
const (
	fnHello     = "_dist.hello"
	fnJoin      = "_dist.join"
	fnMembers   = "_dist.members"
	fnFollow    = "_dist.follow"
	fnPeerAlive = "_dist.peer.alive"
	fnTree      = "_dist.tree"
	fnExit      = "_dist.exit"
	fnDrop      = "_dist.drop"
	fnGrow      = "_dist.grow"
	fnFetch     = "_dist.fetch"
	fnReady     = "_dist.ready"
	fnChNew     = "_dist.ch.new"
	fnChPut     = "_dist.ch.put"
	fnChTake    = "_dist.ch.take"
	fnChFetch   = "_dist.ch.fetch"
	fnChReady   = "_dist.ch.ready"
	fnChClose   = "_dist.ch.close"
	fnPing      = "_dist.ping"
)

// builtin registers a runtime function with a typed argument and result.
func builtin[In, Out any](name string, fn func(ctx context.Context, c *Cluster, in In) (Out, error)) {
	register(name, func(ctx context.Context, fr *wire.Frame, arg []byte) (wire.Msg, error) {
		var in In
		if err := codec.Decode(arg, fr.Raw, &in); err != nil {
			return wire.Msg{}, fmt.Errorf("%w: argument of %s: %v", ErrTypeMismatch, name, err)
		}
		c := Current(ctx)
		if c == nil {
			return wire.Msg{}, errors.New("dist: no cluster in this process")
		}
		out, err := fn(ctx, c, in)
		if err != nil {
			return wire.Msg{}, err
		}
		return codec.Encode(nil, out)
	})
}

// rawBuiltin registers a runtime function that sees the frame: for values that pass through
// without being decoded (channel items, stored results).
func rawBuiltin(name string, fn func(ctx context.Context, c *Cluster, fr *wire.Frame, arg []byte) (wire.Msg, error)) {
	register(name, func(ctx context.Context, fr *wire.Frame, arg []byte) (wire.Msg, error) {
		c := Current(ctx)
		if c == nil {
			return wire.Msg{}, errors.New("dist: no cluster in this process")
		}
		return fn(ctx, c, fr, arg)
	})
}

func init() {
	builtin(fnHello, func(ctx context.Context, c *Cluster, pid int) (bool, error) {
		return c.handleHello(ctx, pid)
	})
	builtin(fnJoin, func(ctx context.Context, c *Cluster, req joinReq) (joinReply, error) {
		return c.handleJoin(ctx, req)
	})
	builtin(fnMembers, func(ctx context.Context, c *Cluster, u membersUpdate) (struct{}, error) {
		c.applyMembers(u)
		return struct{}{}, nil
	})
	builtin(fnFollow, func(ctx context.Context, c *Cluster, _ struct{}) (membersUpdate, error) {
		if !c.driver {
			return membersUpdate{}, errors.New("only the driver keeps the membership")
		}
		c.memberMsgs.Add(1)
		return c.follow(CallerPid(ctx)), nil
	})
	builtin(fnPeerAlive, func(ctx context.Context, c *Cluster, pid int) (bool, error) {
		if !c.driver {
			return false, errors.New("only the driver keeps the membership")
		}
		c.memberMsgs.Add(1)
		return c.peerAlive(ctx, pid), nil
	})
	builtin(fnExit, func(ctx context.Context, c *Cluster, _ struct{}) (struct{}, error) {
		if c.driver {
			return struct{}{}, errors.New("the driver does not exit on request")
		}
		c.requestExit()
		return struct{}{}, nil
	})
	builtin(fnTree, func(ctx context.Context, c *Cluster, req treeReq) (treeReply, error) {
		return c.serveTree(ctx, req)
	})
	builtin(fnPing, func(ctx context.Context, c *Cluster, _ struct{}) (struct{}, error) {
		return struct{}{}, nil
	})
	builtin(fnDrop, func(ctx context.Context, c *Cluster, drops []int64) (struct{}, error) {
		return struct{}{}, c.refs.dropBatch(drops, CallerPid(ctx))
	})
	builtin(fnGrow, func(ctx context.Context, c *Cluster, d refDrop) (struct{}, error) {
		c.refs.add(refKey{d.Whence, d.Num}, d.Weight)
		return struct{}{}, nil
	})
	rawBuiltin(fnFetch, func(ctx context.Context, c *Cluster, fr *wire.Frame, arg []byte) (wire.Msg, error) {
		var id refID
		if err := codec.Unmarshal(arg, &id); err != nil {
			return wire.Msg{}, fmt.Errorf("%w: %v", ErrTypeMismatch, err)
		}
		return c.refs.get(id.key(), CallerPid(ctx)).wait(ctx)
	})
	builtin(fnReady, func(ctx context.Context, c *Cluster, id refID) (bool, error) {
		return c.refs.get(id.key(), CallerPid(ctx)).isReady(), nil
	})
	registerChannelBuiltins()
}
