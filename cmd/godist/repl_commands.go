package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/godist/dist"
	"github.com/godist/dist/script"
	"github.com/godist/dist/shm"
)

// A command of the REPL: a line starting with ':' (or '@' for the Julia macros everywhere,
// spawnat and fetchfrom). Its argument is the rest of the entry, which may span lines.
type command struct {
	name    string
	args    string // synopsis
	summary string // one line for :help
	detail  string // more for :help NAME
	// run does the command and returns its value, if it has one (nil otherwise), which the
	// REPL prints and binds to ans (or to the name in "name := :command …").
	run func(r *repl, ctx context.Context, arg string) (any, error)
}

// commands is filled in init, because the commands' functions refer to the table (help).
var commands map[string]*command

// aliases map other spellings (Julia's names included) to command names.
var aliases = map[string]string{
	"q":               "quit",
	"exit":            "quit",
	"h":               "help",
	"?":               "help",
	"remotecall":      "spawnat",
	"whos":            "vars",
	"describepids":    "topology",
	"memstats":        "mem",
	"nprocs":          "procs",
	"workers":         "procs",
	"fetch":           "fetchfrom",
	"everywhere_else": "everywhereelse",
}

func init() {
	commands = map[string]*command{}
	for _, c := range []*command{
		{name: "help", args: "[COMMAND]", summary: "this text, or one command's", run: helpCommand},
		{name: "quit", summary: "leave (as Ctrl-D): every worker is stopped", run: func(r *repl, _ context.Context, _ string) (any, error) {
			r.quit = true
			return nil, nil
		}},
		{name: "everywhere", args: "CODE", summary: "run CODE on every process, the driver included (Julia's @everywhere)",
			detail: "The way to define functions and types everywhere; values are discarded (:reap shows them).",
			run:    cmdEverywhere},
		{name: "everywhereelse", args: "CODE", summary: "run CODE on every worker, not on the driver",
			run: cmdEverywhereElse},
		{name: "spawnat", args: "PIDS CODE", summary: "run CODE on PIDS and wait; the value is discarded (Julia's @spawnat)",
			run: cmdSpawnAt},
		{name: "fetchfrom", args: "PID EXPR", summary: "the value of EXPR evaluated on PID (Julia's @fetchfrom)",
			run: cmdFetchFrom},
		{name: "reap", args: "PIDS EXPR", summary: "the value of EXPR on each of PIDS, by pid",
			detail: "Example: :reap workers math.Sqrt(float64(myid()))",
			run:    cmdReap},
		{name: "sow", args: "PIDS TARGET = EXPR", summary: "evaluate EXPR on each of PIDS and assign it to TARGET there",
			detail: "TARGET is a name (a global, defined or redefined), or an index, key, field or slice expression\n" +
				"into an existing value: bar[0:2] = 0 zeroes the first two rows of a [][]float64 (Julia's\n" +
				"bar[1:2,:] = 0); somedict[\"buzz\"].([][]float64)[:] = math.Pi fills the rows of a matrix\n" +
				"held in a map[string]any.",
			run: cmdSow},
		{name: "sowvalue", args: "PIDS TARGET = EXPR", summary: "evaluate EXPR here, on the driver, and assign its value to TARGET on PIDS",
			detail: "Julia's sow(2, :y, myid()), where myid() is evaluated by the caller: y is 1 on pid 2.",
			run:    cmdSowValue},
		{name: "stitch", args: "PIDS EXPR", summary: "EXPR from each of PIDS, concatenated in ascending pid order",
			run: cmdStitch},
		{name: "procs", summary: "the processes: pid, host, OS pid, address", run: cmdProcs},
		{name: "addprocs", args: "N", summary: "start N more local workers", run: cmdAddProcs},
		{name: "rmprocs", args: "PIDS", summary: "stop workers", run: cmdRmProcs},
		{name: "topology", args: "[remote|local|all] [PIDS] [~HOSTRE]", summary: "processes grouped by host, keyed by the lowest pid of each (describepids)",
			detail: "remote (the default, as ClusterUtils) leaves out the driver's host, so on one machine it is\n" +
				"empty; local is the driver's host only; all is every host. ~HOSTRE keeps the hosts whose\n" +
				"name matches the regular expression (describepids' filterfn).",
			run: cmdTopology},
		{name: "broadcastshared", args: "NAME = EXPR", summary: "a shared array NAME on every host, holding EXPR evaluated here (broadcast_shared)",
			detail: "EXPR is a slice or a slice of equal rows of numbers ([]float64, [][]float32, []int, …). Each\n" +
				"host gets one copy, in shared memory, bound to NAME in every process there; code sees it as a\n" +
				"flat slice in column-major order (element i,j of an r×c matrix at j*r+i), and a write to it\n" +
				"is seen by every process of that host.",
			run: cmdBroadcastShared},
		{name: "include", args: "FILE.go", summary: "load a Go file's declarations on every process (Julia's -L / @everywhere include)",
			detail: "Its package clause is dropped and its main, if any, is not run (godist run runs it).",
			run:    cmdInclude},
		{name: "swapmsgs", args: "PIDS NAME", summary: "all-to-all: afterwards every process of PIDS holds, in NAME[k], process k's NAME[k]",
			detail: "NAME is a global map keyed by pid (a MessageDict) on each of PIDS; each process writes its own\n" +
				"slot, NAME[myid()], before the swap. Example:\n" +
				"  :sowvalue workers somemsg = map[int]any{2: 0, 3: 0}\n" +
				"  :everywhereelse somemsg[myid()] = 2 * myid()\n" +
				"  :swapmsgs workers somemsg\n" +
				"  :fetchfrom 2 somemsg",
			run: cmdSwapMsgs},
		{name: "collectmsgs", args: "NAME PIDS", summary: "gather, here, slot k of NAME from each process k of PIDS",
			run: cmdCollectMsgs},
		{name: "mem", args: "[PIDS]", summary: "resident memory and CPU of each process (the notebook's memstats)",
			run: cmdMem},
		{name: "vars", args: "[PIDS]", summary: "the globals of each namespace: name, type, size (Julia's whos)",
			run: cmdVars},
		{name: "clear", args: "PIDS [NAME...]", summary: "set the named globals to zero on PIDS; without names, drop PIDS' namespaces",
			run: cmdClear},
		{name: "save", args: "FILE NAME... | FILE = EXPR", summary: "save the driver's variables NAME..., or the value of EXPR, to FILE",
			detail: "The file format is script's (versioned CBOR): :load reads it back, with the types.\n" +
				"Examples: :save temp.cbor X R      :save temp.cbor = []float64{1, 2}",
			run: cmdSave},
		{name: "load", args: "FILE", summary: "the value saved in FILE (a map[string]any for saved variables)",
			detail: "Bind it with x := :load FILE; :loadinto defines saved variables on processes.",
			run:    cmdLoad},
		{name: "loadinto", args: "PIDS FILE", summary: "define the variables saved in FILE on each of PIDS",
			run: cmdLoadInto},
		{name: "timeit", args: "N COMMAND", summary: "run a command N times; its value is the mean time per run, in seconds",
			detail: "Example: :timeit 100 :reap 2 myid()",
			run:    cmdTimeit},
	} {
		commands[c.name] = c
	}
}

func lookupCommand(name string) (*command, bool) {
	if a, ok := aliases[name]; ok {
		name = a
	}
	c, ok := commands[name]
	return c, ok
}

const pidsHelp = `PIDS is a pid (3), a list (2,3,4 or [2,3,4]), an inclusive range (2:4), one of
"workers" and "all" (the driver included), or a Go expression evaluated on the
driver that gives an int or a []int (remotes, []int{2, 3}, workers()[:2]).`

// helpText is the REPL's introduction, printed by :help; `godist repl -h` prints it too.
const helpText = `Go code typed at the prompt runs on the driver (pid 1) in a Go interpreter: statements,
declarations (func, type, var, import) and expressions, whose value is printed and kept in
ans (end the entry with ';' to print nothing). An entry goes on over several lines while a
bracket is open or a line ends with an operator or a comma; Ctrl-C drops the entry being
typed, or interrupts the one running. Every process has its own namespace, created on first
use, where myid(), nprocs() and workers() describe the cluster and the standard library's
common packages are imported (the interpreter, yaegi, speaks Go 1.20: no min and max).
Up/Down and Ctrl-R search the history (-history, $GODIST_HISTORY, ~/.godist_history).
Ctrl-D leaves, stopping every worker.

Commands (a leading ':'; @everywhere, @spawnat and @fetchfrom work too). The value of a
command is printed and kept in ans, or assigned to a driver variable with NAME := :command:
`

// codeHelp lists what interpreted code may call to reach other processes.
const codeHelp = `In Go code, on any process (not on its own pid, whose namespace is busy running the caller):
  reap(pids []int, expr string) map[int]any    fetchfrom(pid int, expr string) any
  sow(pids []int, target, expr string)         sowvalue(pids []int, target string, v any)
  stitch(pids []int, expr string) any          spawnat(pid int, code string)
  everywhereelse(code string)                  swapmsgs(pids []int, name string)
  collectmsgs(name string, pids []int) map[int]any
Values come back with their types: reap(workers(), "v")[2].([]float64).
For example: for _, k := range workers() { spawnat(k, fmt.Sprintf("somemsg[%d] = %d", k, 2*k)) }
`

func helpCommand(r *repl, _ context.Context, arg string) (any, error) {
	if arg != "" {
		c, ok := lookupCommand(strings.TrimPrefix(strings.TrimPrefix(arg, ":"), "@"))
		if !ok {
			return nil, fmt.Errorf("no command %q (:help lists them)", arg)
		}
		fmt.Fprintf(r.out, ":%s %s\n    %s\n", c.name, c.args, c.summary)
		if c.detail != "" {
			for _, line := range strings.Split(c.detail, "\n") {
				fmt.Fprintf(r.out, "    %s\n", line)
			}
		}
		return nil, nil
	}
	writeHelp(r.out)
	return nil, nil
}

// writeHelp writes the REPL's whole help: :help, and godist repl -h.
func writeHelp(w io.Writer) {
	fmt.Fprint(w, helpText)
	writeCommandList(w)
	fmt.Fprintf(w, "\n%s\n\n%s", pidsHelp, codeHelp)
}

func writeCommandList(w io.Writer) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-36s %s\n", ":"+c.name+" "+c.args, c.summary)
	}
}

func cmdEverywhere(r *repl, ctx context.Context, code string) (any, error) {
	if code == "" {
		return nil, errors.New("usage: :everywhere CODE")
	}
	return nil, script.Everywhere(ctx, r.c, code)
}

func cmdEverywhereElse(r *repl, ctx context.Context, code string) (any, error) {
	if code == "" {
		return nil, errors.New("usage: :everywhereelse CODE")
	}
	return nil, script.EverywhereElse(ctx, r.c, code)
}

func cmdSpawnAt(r *repl, ctx context.Context, arg string) (any, error) {
	pids, code, err := r.pidsAnd(ctx, arg, "PIDS CODE")
	if err != nil {
		return nil, err
	}
	_, err = script.Eval(ctx, r.c, pids, code)
	return nil, err
}

func cmdFetchFrom(r *repl, ctx context.Context, arg string) (any, error) {
	pids, expr, err := r.pidsAnd(ctx, arg, "PID EXPR")
	if err != nil {
		return nil, err
	}
	if len(pids) != 1 {
		return nil, fmt.Errorf(":fetchfrom takes one pid, not %d (:reap takes several)", len(pids))
	}
	v, err := script.Reap(ctx, r.c, pids, expr)
	if err != nil {
		return nil, err
	}
	return v[pids[0]], nil
}

func cmdReap(r *repl, ctx context.Context, arg string) (any, error) {
	pids, expr, err := r.pidsAnd(ctx, arg, "PIDS EXPR")
	if err != nil {
		return nil, err
	}
	return script.Reap(ctx, r.c, pids, expr)
}

func cmdSow(r *repl, ctx context.Context, arg string) (any, error) {
	pids, rest, err := r.pidsAnd(ctx, arg, "PIDS TARGET = EXPR")
	if err != nil {
		return nil, err
	}
	target, expr, ok := splitAssign(rest)
	if !ok || target == "" || expr == "" {
		return nil, errors.New("usage: :sow PIDS TARGET = EXPR")
	}
	return nil, script.Sow(ctx, r.c, pids, target, expr)
}

func cmdSowValue(r *repl, ctx context.Context, arg string) (any, error) {
	pids, rest, err := r.pidsAnd(ctx, arg, "PIDS TARGET = EXPR")
	if err != nil {
		return nil, err
	}
	target, expr, ok := splitAssign(rest)
	if !ok || target == "" || expr == "" {
		return nil, errors.New("usage: :sowvalue PIDS TARGET = EXPR")
	}
	v, err := script.EvalLocal(ctx, expr)
	if err != nil {
		return nil, err
	}
	return nil, script.SowValue(ctx, r.c, pids, target, v)
}

func cmdStitch(r *repl, ctx context.Context, arg string) (any, error) {
	pids, expr, err := r.pidsAnd(ctx, arg, "PIDS EXPR")
	if err != nil {
		return nil, err
	}
	return script.Stitch(ctx, r.c, pids, expr)
}

func cmdProcs(r *repl, _ context.Context, _ string) (any, error) {
	tw := tabwriter.NewWriter(r.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "pid\thost\tos pid\taddress")
	for _, p := range r.c.Procs() {
		if p == r.c.MyID() {
			host, _ := os.Hostname()
			fmt.Fprintf(tw, "%d\t%s\t%d\t(driver)\n", p, host, os.Getpid())
			continue
		}
		info, ok := r.c.ProcInfo(p)
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s %s\n", p, info.Host, info.OSPid, info.Network, info.Addr)
	}
	return nil, tw.Flush()
}

func cmdAddProcs(r *repl, ctx context.Context, arg string) (any, error) {
	n, err := strconv.Atoi(strings.TrimSpace(arg))
	if err != nil || n <= 0 {
		return nil, errors.New("usage: :addprocs N (a positive number)")
	}
	pids, err := r.c.AddProcs(ctx, nil, n)
	if len(pids) > 0 {
		fmt.Fprintf(r.out, "added %s\n", formatPids(pids))
	}
	return nil, err
}

func cmdRmProcs(r *repl, ctx context.Context, arg string) (any, error) {
	word, rest := splitWord(arg)
	if word == "" || rest != "" {
		return nil, errors.New("usage: :rmprocs PIDS")
	}
	pids, err := r.pids(ctx, word)
	if err != nil {
		return nil, err
	}
	var gone []int
	for _, p := range pids {
		if p == r.c.MyID() {
			return nil, errors.New("the driver (pid 1) cannot be removed: Ctrl-D leaves")
		}
		if _, ok := r.c.ProcInfo(p); !ok {
			return nil, fmt.Errorf("pid %d is not a worker of the cluster", p)
		}
		gone = append(gone, p)
	}
	if err := r.c.RmProcs(ctx, gone...); err != nil {
		return nil, err
	}
	fmt.Fprintf(r.out, "removed %s; workers now %s\n", formatPids(gone), formatPids(r.c.Workers()))
	return nil, nil
}

func cmdTopology(r *repl, ctx context.Context, arg string) (any, error) {
	q := shm.Query{Select: shm.Remote}
	word, rest := splitWord(arg)
	switch word {
	case "", "remote":
	case "local":
		q.Select = shm.Local
	case "all":
		q.Select = shm.All
	default:
		rest = arg
	}
	// A last word ~REGEXP keeps the hosts whose name matches (describepids' filterfn).
	if i := strings.LastIndex(rest, "~"); i >= 0 && !strings.ContainsAny(rest[i:], " \t") {
		re, err := regexp.Compile(rest[i+1:])
		if err != nil {
			return nil, fmt.Errorf("host filter: %w", err)
		}
		q.HostFilter = re.MatchString
		rest = strings.TrimSpace(rest[:i])
	}
	if rest != "" {
		pids, err := r.pids(ctx, rest)
		if err != nil {
			return nil, err
		}
		q.Pids = pids
	}
	topo, err := shm.DescribePids(ctx, r.c, q)
	if err != nil {
		return nil, err
	}
	m := make(map[int][]int, len(topo))
	for k, v := range topo {
		m[k] = v
	}
	return m, nil
}

func cmdBroadcastShared(r *repl, ctx context.Context, arg string) (any, error) {
	name, expr, ok := splitAssign(arg)
	if !ok || name == "" || expr == "" {
		return nil, errors.New("usage: :broadcastshared NAME = EXPR")
	}
	v, err := script.EvalLocal(ctx, expr)
	if err != nil {
		return nil, err
	}
	topo, err := shm.DescribePids(ctx, r.c, shm.Query{Select: shm.All})
	if err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case []float64:
		err = broadcast(ctx, r.c, topo, x, nil, name)
	case [][]float64:
		err = broadcastMatrix(ctx, r.c, topo, x, name)
	case []float32:
		err = broadcast(ctx, r.c, topo, x, nil, name)
	case [][]float32:
		err = broadcastMatrix(ctx, r.c, topo, x, name)
	case []int:
		err = broadcast(ctx, r.c, topo, x, nil, name)
	case [][]int:
		err = broadcastMatrix(ctx, r.c, topo, x, name)
	case []int64:
		err = broadcast(ctx, r.c, topo, x, nil, name)
	case [][]int64:
		err = broadcastMatrix(ctx, r.c, topo, x, name)
	case []int32:
		err = broadcast(ctx, r.c, topo, x, nil, name)
	case []uint8:
		err = broadcast(ctx, r.c, topo, x, nil, name)
	default:
		return nil, fmt.Errorf("a %T cannot be a shared array here: a slice, or rows, of float64, float32, int, int64 (or int32, uint8)", v)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(r.out, "%s shared on %d host(s), representatives %s\n", name, len(topo), formatPids(topo.Reps()))
	return nil, nil
}

// broadcast is shm.BroadcastShared; the caller's handles are released at once, the bindings
// under name keep theirs.
func broadcast[T any](ctx context.Context, c *dist.Cluster, topo shm.Topology, data []T, dims []int, name string) error {
	arrays, err := shm.BroadcastShared(ctx, c, topo, data, dims, name)
	for _, a := range arrays {
		a.Release()
	}
	return err
}

// broadcastMatrix shares rows as an r×c array, stored column-major as shm's arrays are.
func broadcastMatrix[T any](ctx context.Context, c *dist.Cluster, topo shm.Topology, rows [][]T, name string) error {
	if len(rows) == 0 || len(rows[0]) == 0 {
		return errors.New("an empty matrix")
	}
	r, cols := len(rows), len(rows[0])
	data := make([]T, r*cols)
	for i, row := range rows {
		if len(row) != cols {
			return fmt.Errorf("row %d has %d elements, row 0 has %d", i, len(row), cols)
		}
		for j, x := range row {
			data[j*r+i] = x
		}
	}
	return broadcast(ctx, c, topo, data, []int{r, cols}, name)
}

func cmdInclude(r *repl, ctx context.Context, arg string) (any, error) {
	if arg == "" {
		return nil, errors.New("usage: :include FILE.go")
	}
	_, err := script.LoadFile(ctx, r.c, r.c.Procs(), arg)
	return nil, err
}

func cmdSwapMsgs(r *repl, ctx context.Context, arg string) (any, error) {
	pids, name, err := r.pidsAnd(ctx, arg, "PIDS NAME")
	if err != nil {
		return nil, err
	}
	return nil, script.SwapMsgs(ctx, r.c, pids, name)
}

func cmdCollectMsgs(r *repl, ctx context.Context, arg string) (any, error) {
	name, rest := splitWord(arg)
	if name == "" || rest == "" {
		return nil, errors.New("usage: :collectmsgs NAME PIDS")
	}
	pids, err := r.pids(ctx, rest)
	if err != nil {
		return nil, err
	}
	m, err := script.CollectMsgs(ctx, r.c, name, pids)
	if err != nil {
		return nil, err
	}
	return map[int]any(m), nil
}

// optionalPids resolves an optional PIDS argument; empty means every process.
func (r *repl) optionalPids(ctx context.Context, arg string) ([]int, error) {
	if strings.TrimSpace(arg) == "" {
		return r.c.Procs(), nil
	}
	return r.pids(ctx, strings.TrimSpace(arg))
}

func cmdMem(r *repl, ctx context.Context, arg string) (any, error) {
	pids, err := r.optionalPids(ctx, arg)
	if err != nil {
		return nil, err
	}
	stats, err := script.MemStats(ctx, r.c, pids)
	tw := tabwriter.NewWriter(r.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pid\thost\tos pid\tRSS MiB\theap MiB\tCPU s\t%CPU\t")
	for _, s := range stats {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f\t%.1f\t%.2f\t%.1f\t\n", s.Pid, s.Host, s.OSPid,
			float64(s.RSS)/(1<<20), float64(s.HeapUse)/(1<<20), s.CPU.Seconds(), s.CPUPct)
	}
	tw.Flush()
	return nil, err
}

func cmdVars(r *repl, ctx context.Context, arg string) (any, error) {
	pids, err := r.optionalPids(ctx, arg)
	if err != nil {
		return nil, err
	}
	vars, err := script.Vars(ctx, r.c, pids)
	for _, p := range slices.Sorted(maps.Keys(vars)) {
		fmt.Fprintf(r.out, "pid %d:\n", p)
		tw := tabwriter.NewWriter(r.out, 0, 4, 2, ' ', 0)
		for _, v := range vars[p] {
			kind := ""
			if v.Const {
				kind = " (const)"
			}
			fmt.Fprintf(tw, "  %s\t%s%s\t%s\n", v.Name, v.Type, kind, byteSize(v.Bytes))
		}
		tw.Flush()
	}
	return nil, err
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func cmdClear(r *repl, ctx context.Context, arg string) (any, error) {
	word, rest := splitWord(arg)
	if word == "" {
		return nil, errors.New("usage: :clear PIDS [NAME...]")
	}
	pids, err := r.pids(ctx, word)
	if err != nil {
		return nil, err
	}
	names := strings.Fields(rest)
	if err := script.Clear(ctx, r.c, pids, names...); err != nil || len(names) > 0 {
		return nil, err
	}
	// Fresh namespaces: what the REPL defined in them at the start is defined again.
	return nil, script.SowValue(ctx, r.c, pids, "args", []string{})
}

func cmdSave(r *repl, ctx context.Context, arg string) (any, error) {
	file, rest := splitWord(arg)
	if file == "" || rest == "" {
		return nil, errors.New("usage: :save FILE NAME... or :save FILE = EXPR")
	}
	if expr, ok := strings.CutPrefix(rest, "="); ok {
		v, err := script.EvalLocal(ctx, strings.TrimSpace(expr))
		if err != nil {
			return nil, err
		}
		return nil, script.Save(file, v)
	}
	return nil, script.SaveNames(ctx, r.c, r.c.MyID(), file, strings.Fields(rest)...)
}

func cmdLoad(r *repl, _ context.Context, arg string) (any, error) {
	if arg == "" {
		return nil, errors.New("usage: :load FILE")
	}
	return script.Load(arg)
}

func cmdLoadInto(r *repl, ctx context.Context, arg string) (any, error) {
	pids, file, err := r.pidsAnd(ctx, arg, "PIDS FILE")
	if err != nil {
		return nil, err
	}
	return nil, script.LoadInto(ctx, r.c, pids, file)
}

func cmdTimeit(r *repl, ctx context.Context, arg string) (any, error) {
	word, rest := splitWord(arg)
	n, err := strconv.Atoi(word)
	if err != nil || n <= 0 || rest == "" || rest[0] != ':' {
		return nil, errors.New("usage: :timeit N :COMMAND ARGS")
	}
	name, cmdArg := splitWord(rest[1:])
	c, ok := lookupCommand(name)
	if !ok {
		return nil, fmt.Errorf("unknown command :%s", name)
	}
	// The command's output would drown the figure.
	out := r.out
	defer func() { r.out = out }()
	r.out = io.Discard
	d, err := script.Timeit(n, func() error {
		_, err := c.run(r, ctx, cmdArg)
		return err
	})
	if err != nil {
		return nil, err
	}
	return d.Seconds(), nil
}

// pidsAnd splits "PIDS REST" and resolves PIDS.
func (r *repl) pidsAnd(ctx context.Context, arg, usage string) ([]int, string, error) {
	word, rest := splitWord(arg)
	if word == "" || rest == "" {
		return nil, "", fmt.Errorf("usage: %s", usage)
	}
	pids, err := r.pids(ctx, word)
	return pids, rest, err
}

// pids resolves a pid list: a literal (parsePids), else a Go expression evaluated on the
// driver whose value is an int or a slice of ints.
func (r *repl) pids(ctx context.Context, s string) ([]int, error) {
	pids, ok, err := parsePids(s, r.c.Procs(), r.c.Workers())
	if ok || err != nil {
		return pids, err
	}
	v, err := script.EvalLocal(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("pids %s: %w", s, err)
	}
	switch x := v.(type) {
	case int:
		return []int{x}, nil
	case []int:
		return x, nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array {
		out := make([]int, rv.Len())
		for i := range out {
			e := rv.Index(i)
			for e.Kind() == reflect.Interface && !e.IsNil() {
				e = e.Elem()
			}
			if !e.CanInt() {
				return nil, fmt.Errorf("pids %s: element %d is a %s, not a pid", s, i, e.Type())
			}
			out[i] = int(e.Int())
		}
		return out, nil
	}
	if rv.CanInt() {
		return []int{int(rv.Int())}, nil
	}
	return nil, fmt.Errorf("pids %s: a %T is not a pid or a list of pids", s, v)
}
