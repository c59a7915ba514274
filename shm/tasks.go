package shm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist"
	"github.com/godist/dist/internal/codec"
)

// Server tasks (PTools' ServerTasks) live in package shm rather than in dist, where DESIGN.md
// lists them: their configured segments are shared arrays, and dist must not import shm.

// ShmCfg describes a shared segment mapped into every server task and the caller (PTools'
// ShmCfg(name, type, dims)). Make one with Seg.
type ShmCfg struct {
	name     string
	elem     string
	elemSize int
	dims     []int
	err      error
}

// Seg describes a segment named name of elements of type T, shaped dims.
func Seg[T any](name string, dims ...int) ShmCfg {
	elem, size, err := elemInfo[T]()
	return ShmCfg{name: name, elem: elem, elemSize: size, dims: slices.Clone(dims), err: err}
}

// Tasks is the handle of a set of server tasks: one long-lived task per worker (per process
// when there are no workers), each serving the calls of PmapTasks one at a time with state that
// persists between calls (Task.Store) and the configured segments.
type Tasks struct {
	c      *dist.Cluster
	id     string
	pids   []int
	arrays map[string]*Array

	mu      sync.Mutex
	stopped bool
	quit    chan struct{} // closed once stopped: ends the watch of the cluster
}

// Task is a server task's own state, reachable in the functions PmapTasks runs through
// CurrentTask.
type Task struct {
	Index int            // position among the tasks, 0-based
	Count int            // number of tasks
	Store map[string]any // task-local storage; only this task's calls use it, one at a time

	arrays   map[string]*Array
	reqs     chan taskReq  // never closed: a caller may be sending when the task stops
	stop     chan struct{} // closed by stopOnce to end the task
	stopOnce sync.Once
	done     chan struct{} // closed when serve has ended
}

type taskKey struct{}

// CurrentTask returns the server task running the function called with ctx, or nil outside one.
func CurrentTask(ctx context.Context) *Task {
	t, _ := ctx.Value(taskKey{}).(*Task)
	return t
}

// TaskArray returns the task's mapping of the segment configured as name.
func TaskArray[T any](t *Task, name string) (*SharedArray[T], error) {
	if t == nil {
		return nil, errors.New("shm: TaskArray: not in a server task")
	}
	a := t.arrays[name]
	if a == nil {
		return nil, fmt.Errorf("shm: TaskArray: no segment %q", name)
	}
	return As[T](a)
}

type taskReq struct {
	ctx   context.Context
	fn    string
	args  []byte
	reply chan taskReply
}

type taskReply struct {
	val []byte
	err error
}

// tasks are the server tasks of this process, by handle id.
var tasks = struct {
	sync.Mutex
	m map[string]*Task
}{m: make(map[string]*Task)}

type taskStart struct {
	_      struct{} `cbor:",toarray"`
	ID     string
	Index  int
	Count  int
	Names  []string
	Arrays []*Array
}

var taskStartFunc = dist.NewFunc("godist.shm.taskStart", func(ctx context.Context, r taskStart) (struct{}, error) {
	c := dist.Current(ctx)
	t := &Task{Index: r.Index, Count: r.Count, Store: make(map[string]any), arrays: make(map[string]*Array),
		reqs: make(chan taskReq), stop: make(chan struct{}), done: make(chan struct{})}
	local := dist.CallerPid(ctx) == c.MyID()
	for i, name := range r.Names {
		a := r.Arrays[i]
		if local { // the caller's own handles came without a copy: take our own
			var err error
			if a, err = a.clone(); err != nil {
				return struct{}{}, err
			}
		}
		t.arrays[name] = a
	}
	tasks.Lock()
	if tasks.m[r.ID] != nil {
		tasks.Unlock()
		return struct{}{}, fmt.Errorf("shm: server task %s already runs here", r.ID)
	}
	tasks.m[r.ID] = t
	tasks.Unlock()
	go t.serve(c, r.ID)
	return struct{}{}, nil
})

// serve is the task: it runs the requests one at a time until stopped or until its process's
// cluster ends (without workers the task runs in the caller, whose process goes on after
// Close: a forgotten Stop must not keep the goroutine and the mappings).
func (t *Task) serve(c *dist.Cluster, id string) {
	defer close(t.done)
	defer func() {
		tasks.Lock()
		if tasks.m[id] == t {
			delete(tasks.m, id)
		}
		tasks.Unlock()
		for _, a := range t.arrays {
			a.Release()
		}
	}()
	for {
		select {
		case req := <-t.reqs:
			select {
			case <-t.stop: // both were ready: Stop wins over the calls that waited for the task
				req.reply <- taskReply{err: errTaskStopped}
				return
			default:
			}
			ctx := context.WithValue(req.ctx, taskKey{}, t)
			v, err := c.CallByName(ctx, c.MyID(), req.fn, cbor.RawMessage(req.args))
			var b []byte
			if err == nil {
				b, err = codec.Marshal(v)
			}
			req.reply <- taskReply{b, err}
		case <-t.stop:
			return
		case <-c.Done():
			return
		}
	}
}

var errTaskStopped = errors.New("shm: server task stopped")

type taskCall struct {
	_    struct{} `cbor:",toarray"`
	ID   string
	Fn   string
	Args []byte
}

var taskCallFunc = dist.NewFunc("godist.shm.taskCall", func(ctx context.Context, r taskCall) ([]byte, error) {
	tasks.Lock()
	t := tasks.m[r.ID]
	tasks.Unlock()
	if t == nil {
		return nil, errors.New("shm: no such server task here (stopped?)")
	}
	reply := make(chan taskReply, 1)
	select {
	case t.reqs <- taskReq{ctx: ctx, fn: r.Fn, args: r.Args, reply: reply}:
	case <-t.done:
		return nil, errTaskStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rep := <-reply // the task always answers a request it took
	return rep.val, rep.err
})

var taskStopFunc = dist.NewFunc("godist.shm.taskStop", func(ctx context.Context, id string) (struct{}, error) {
	tasks.Lock()
	t := tasks.m[id]
	delete(tasks.m, id)
	tasks.Unlock()
	if t == nil {
		return struct{}{}, nil
	}
	t.stopOnce.Do(func() { close(t.stop) })
	select {
	case <-t.done:
		return struct{}{}, nil
	case <-ctx.Done():
		return struct{}{}, ctx.Err()
	}
})

// StartTasks starts one server task on each worker of c (on the caller alone if there are no
// workers), creating the configured segments shared by the tasks and the caller (PTools'
// start_stasks). With segments, the tasks' processes must be on one host. The caller should call
// Stop: until then every task holds a goroutine and its segments' mappings in its process.
// Closing c ends them too, as it ends the workers: the tasks, and the caller's mappings of the
// segments, do not outlive c.
func StartTasks(ctx context.Context, c *dist.Cluster, cfgs ...ShmCfg) (*Tasks, error) {
	if c == nil {
		return nil, errors.New("shm: StartTasks: nil cluster")
	}
	var tok [16]byte
	rand.Read(tok[:])
	h := &Tasks{c: c, id: fmt.Sprintf("%x", tok), pids: c.Workers(), arrays: make(map[string]*Array),
		quit: make(chan struct{})}
	var names []string
	var arrays []*Array
	fail := func(err error) (*Tasks, error) {
		h.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("shm: StartTasks: %w", err)
	}
	if len(cfgs) > 0 {
		pids, host, err := participants(ctx, c, h.pids)
		if err != nil {
			return fail(err)
		}
		for _, cfg := range cfgs {
			if cfg.err != nil {
				return fail(fmt.Errorf("segment %q: %w", cfg.name, cfg.err))
			}
			if _, dup := h.arrays[cfg.name]; dup || cfg.name == "" {
				return fail(fmt.Errorf("segment name %q empty or repeated", cfg.name))
			}
			req := createReq{Dims: cfg.dims, Elem: cfg.elem, ElemSize: cfg.elemSize, Pids: pids}
			var a *Array
			if me, _ := hostID(); host == me {
				a, err = createHere(c, req)
			} else {
				var w arrayWire
				if w, err = createFunc.Call(ctx, c, pids[0], req); err == nil {
					a, err = attach(ctx, &w)
				}
			}
			if err != nil {
				return fail(fmt.Errorf("segment %q: %w", cfg.name, err))
			}
			h.arrays[cfg.name] = a
			names = append(names, cfg.name)
			arrays = append(arrays, a)
		}
	}
	type res struct {
		pid int
		err error
	}
	ch := make(chan res, len(h.pids))
	for i, p := range h.pids {
		go func() {
			_, err := taskStartFunc.Call(ctx, c, p, taskStart{ID: h.id, Index: i, Count: len(h.pids), Names: names, Arrays: arrays})
			ch <- res{p, err}
		}()
	}
	var errs []error
	for range h.pids {
		if r := <-ch; r.err != nil {
			errs = append(errs, fmt.Errorf("task on process %d: %w", r.pid, r.err))
		}
	}
	if len(errs) > 0 {
		return fail(errors.Join(errs...))
	}
	go func() {
		select {
		case <-c.Done():
			if h.finish() {
				h.release()
			}
		case <-h.quit:
		}
	}()
	return h, nil
}

// finish marks h stopped and reports whether this call did, so that exactly one of Stop and
// the cluster's end releases its segments.
func (h *Tasks) finish() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return false
	}
	h.stopped = true
	close(h.quit)
	return true
}

// release drops the caller's mappings of the segments.
func (h *Tasks) release() {
	for _, a := range h.arrays {
		a.Release()
	}
}

// Count returns the number of tasks (PTools' count_stasks), to partition a job by.
func (h *Tasks) Count() int { return len(h.pids) }

// Pids returns the process of each task, by task index.
func (h *Tasks) Pids() []int { return slices.Clone(h.pids) }

// Array returns the caller's mapping of the segment configured as name, or nil.
func (h *Tasks) Array(name string) *Array { return h.arrays[name] }

// PmapTasks calls f on every task concurrently, task i with element i of each list (PTools'
// pmap_stasks): f's argument is []In{lists[0][i], lists[1][i], …}. It returns the results by
// task index once every call has ended. Each list must have Count elements. f runs inside the
// task (CurrentTask gives its state), one call at a time per task, so calls of PmapTasks made
// at once queue up in each task. Failed calls are joined into the error, naming their task;
// the other results are returned. If an argument cannot be encoded, no call is made. After
// Stop it fails at once.
func PmapTasks[In, Out any](ctx context.Context, h *Tasks, f *dist.Func[[]In, Out], lists ...[]In) ([]Out, error) {
	if h == nil || f == nil {
		return nil, errors.New("shm: PmapTasks: nil tasks or function")
	}
	n := h.Count()
	for k, l := range lists {
		if len(l) != n {
			return nil, fmt.Errorf("shm: PmapTasks: list %d has %d elements for %d tasks", k, len(l), n)
		}
	}
	h.mu.Lock()
	stopped := h.stopped
	h.mu.Unlock()
	if stopped {
		return nil, errors.New("shm: PmapTasks: tasks stopped")
	}
	// Every argument is encoded before any call starts: a failure then leaves nothing running.
	enc := make([][]byte, n)
	for i := range n {
		args := make([]In, len(lists))
		for k, l := range lists {
			args[k] = l[i]
		}
		b, err := codec.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("shm: PmapTasks: arguments of task %d: %w", i, err)
		}
		enc[i] = b
	}
	outs := make([]Out, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range h.pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := taskCallFunc.Call(ctx, h.c, p, taskCall{ID: h.id, Fn: f.Name(), Args: enc[i]})
			if err == nil {
				err = codec.Unmarshal(v, &outs[i])
			}
			if err != nil {
				errs[i] = fmt.Errorf("task %d (process %d): %w", i, p, err)
			}
		}()
	}
	wg.Wait()
	return outs, errors.Join(errs...)
}

// Stop ends every task (after the call it is running) and releases the segments: their memory
// is freed once no process holds them (PTools' stop_stasks). Stop is idempotent, and does
// nothing once the cluster is closed (Close has ended the tasks).
func (h *Tasks) Stop(ctx context.Context) error {
	if !h.finish() {
		return nil
	}
	_, err := taskStopFunc.On(ctx, h.c, h.pids, h.id)
	h.release()
	if err != nil {
		return fmt.Errorf("shm: Stop: %w", err)
	}
	return nil
}
