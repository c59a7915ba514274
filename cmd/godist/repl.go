package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/peterh/liner"

	"github.com/godist/dist"
	"github.com/godist/dist/script"
)

const (
	prompt     = "godist> "
	contPrompt = "   ...> " // the same width, so that continued lines align
)

// repl is one interactive session: a cluster, the driver's interpreter namespace, and a
// terminal.
type repl struct {
	c      *dist.Cluster
	out    io.Writer
	errOut io.Writer // errors of entries: stdout too, so that they come in order with the output
	line   *liner.State
	quit   bool
}

func replUsage(fs *flag.FlagSet) func() {
	return func() {
		fmt.Fprint(os.Stderr, `usage: godist repl [-p N] [-worker-output stdout|stderr] [-L FILE.go] [-history FILE]

Starts a local cluster of N workers and an interactive Go prompt on its driver (pid 1), as
"julia -p N" with ClusterUtils does. For example:

  godist> x := 2                           Go on the driver
  godist> :everywhere y := myid() * 10     Go on every process
  godist> :reap workers y                  values by pid
  map[int]any with 2 entries:
    2 => 20
    3 => 30
  godist> :sow 2,3 v = rand.Float64()      evaluated on each worker and assigned there
  godist> :sowvalue 2 w = x                the driver's x, sent to pid 2 as w
  godist> :fetchfrom 2 v * 2               one value from one pid
  godist> s := :stitch workers []int{myid()}
  godist> s
  2-element []int:
   2
   3

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprintln(os.Stderr)
		writeHelp(os.Stderr)
	}
}

// runRepl is `godist repl`.
func runRepl(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("repl", flag.ContinueOnError)
	cf := addClusterFlags(fs)
	load := fs.String("L", "", "a Go file whose declarations are loaded on every process first")
	histFile := fs.String("history", defaultHistoryFile(), "history file (empty: no history kept)")
	fs.Usage = replUsage(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	// The REPL's evaluations get their own contexts, cancelled by Ctrl-C one at a time; the
	// caller's context is cancelled by the first Ctrl-C and would end every later one.
	ctx = context.WithoutCancel(ctx)
	opts, err := cf.options()
	if err != nil {
		fmt.Fprintln(os.Stderr, "godist repl:", err)
		return 2
	}
	startCtx, stop := signal.NotifyContext(ctx, os.Interrupt)
	c, err := dist.Start(startCtx, opts...)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "godist repl:", err)
		return 1
	}
	r := &repl{c: c, out: os.Stdout, errOut: os.Stdout}
	code := r.main(ctx, *load, *histFile)
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "godist repl: closing the cluster:", err)
		code = 1
	}
	return code
}

func defaultHistoryFile() string {
	if f := os.Getenv("GODIST_HISTORY"); f != "" {
		return f
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".godist_history")
}

func (r *repl) main(ctx context.Context, load, histFile string) int {
	r.line = liner.NewLiner()
	defer r.line.Close()
	r.line.SetCtrlCAborts(true)
	r.line.SetMultiLineMode(true)
	if histFile != "" {
		if f, err := os.Open(histFile); err == nil {
			r.line.ReadHistory(f)
			f.Close()
		}
	}
	fmt.Fprintf(r.out, "godist: driver 1, workers %s. Go code runs on the driver; :help lists the commands; Ctrl-D quits.\n",
		formatPids(r.c.Workers()))
	// args is Julia's ARGS, empty here, so that a script written for godist run loads too.
	if err := script.SowValue(ctx, r.c, r.c.Procs(), "args", []string{}); err != nil {
		fmt.Fprintln(r.errOut, "error:", err)
	}
	if load != "" {
		if err := r.loadFile(ctx, load); err != nil {
			fmt.Fprintln(r.errOut, "error:", err)
		}
	}
	for !r.quit {
		entry, err := r.readEntry()
		if errors.Is(err, io.EOF) {
			fmt.Fprintln(r.out)
			break
		}
		if errors.Is(err, liner.ErrPromptAborted) {
			continue
		}
		if err != nil {
			fmt.Fprintln(r.errOut, "godist repl: reading input:", err)
			break
		}
		if strings.TrimSpace(entry) == "" {
			continue
		}
		r.line.AppendHistory(oneLine(entry))
		r.exec(ctx, entry)
	}
	if histFile != "" {
		if err := r.writeHistory(histFile); err != nil {
			fmt.Fprintln(r.errOut, "godist repl: saving the history:", err)
		}
	}
	return 0
}

// readEntry reads lines until they form a complete entry.
func (r *repl) readEntry() (string, error) {
	var lines []string
	for {
		p := prompt
		if len(lines) > 0 {
			p = contPrompt
		}
		l, err := r.line.Prompt(p)
		if err != nil {
			if errors.Is(err, io.EOF) && len(lines) > 0 {
				// Ctrl-D inside an entry drops the entry, as Ctrl-C does, rather than quitting.
				fmt.Fprintln(r.out)
				return "", liner.ErrPromptAborted
			}
			return "", err
		}
		lines = append(lines, l)
		entry := strings.Join(lines, "\n")
		if inputComplete(entry) {
			return entry, nil
		}
	}
}

func (r *repl) writeHistory(file string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := r.line.WriteHistory(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// exec runs one entry: a command or Go code on the driver. Errors are printed; the session
// goes on. Ctrl-C while it runs cancels its context.
func (r *repl) exec(ctx context.Context, entry string) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	defer func() {
		// A bug of the REPL's own (printing an odd value, say) must not end the session and
		// with it the cluster: it is reported as the entry's error.
		if p := recover(); p != nil {
			fmt.Fprintf(r.errOut, "error: godist repl: %v\n", p)
		}
	}()
	err := r.execEntry(ctx, strings.TrimSpace(entry))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintln(r.errOut, "error:", err)
	}
}

// assignCommand matches "name := :command …" and "name = :command …".
var assignCommand = regexp.MustCompile(`(?s)^([\pL_][\pL\pN_]*)\s*:?=\s*([:@][\pL].*)$`)

func (r *repl) execEntry(ctx context.Context, entry string) error {
	if entry[0] != ':' && entry[0] != '@' {
		m := assignCommand.FindStringSubmatch(entry)
		if m == nil {
			return r.evalDriver(ctx, entry)
		}
		// The value of a command goes into a driver variable: Julia's x = reap(…).
		v, err := r.command(ctx, m[2])
		if err != nil {
			return err
		}
		if v == nil {
			return fmt.Errorf("%s has no value to assign", strings.Fields(m[2])[0])
		}
		return script.SowValue(ctx, r.c, []int{r.c.MyID()}, m[1], v)
	}
	quiet := strings.HasSuffix(entry, ";")
	v, err := r.command(ctx, strings.TrimSuffix(entry, ";"))
	if err != nil || v == nil {
		return err
	}
	if !quiet {
		display(r.out, v)
	}
	// As Julia's REPL does, the last value is ans on the driver, to compute with.
	if err := script.SowValue(ctx, r.c, []int{r.c.MyID()}, "ans", v); err != nil {
		fmt.Fprintln(r.errOut, "(ans not set:", err, ")")
	}
	return nil
}

// command runs ":name args" (or "@name args") and returns its value.
func (r *repl) command(ctx context.Context, entry string) (any, error) {
	name, arg := splitWord(entry[1:])
	c, ok := lookupCommand(name)
	if !ok || (entry[0] == '@' && !julianMacros[c.name]) {
		return nil, fmt.Errorf("unknown command %s%s (:help lists them)", entry[:1], name)
	}
	return c.run(r, ctx, arg)
}

// julianMacros are the commands that may be spelled as Julia macros (@everywhere …).
var julianMacros = map[string]bool{"everywhere": true, "spawnat": true, "fetchfrom": true}

// isExpr reports whether src is one Go expression whose value is worth printing: not a call
// of fmt's print functions (their byte count is noise).
func isExpr(src string) bool {
	e, err := parser.ParseExpr(src)
	if err != nil {
		return false
	}
	if call, ok := e.(*ast.CallExpr); ok {
		switch fn := call.Fun.(type) {
		case *ast.SelectorExpr:
			if pkg, ok := fn.X.(*ast.Ident); ok && pkg.Name == "fmt" && strings.HasPrefix(fn.Sel.Name, "Print") {
				return false
			}
		case *ast.Ident:
			if fn.Name == "println" || fn.Name == "print" {
				return false
			}
		}
	}
	return true
}

func formatPids(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}

// evalDriver runs Go code in the driver's namespace and prints the value of an expression.
func (r *repl) evalDriver(ctx context.Context, code string) error {
	v, err := script.EvalLocal(ctx, code)
	if err != nil {
		return err
	}
	if v == nil || !isExpr(strings.TrimSuffix(code, ";")) {
		return nil
	}
	if !strings.HasSuffix(code, ";") {
		display(r.out, v)
	}
	// ans, as in Julia; a value that cannot be copied (a func) just does not become ans.
	script.SowValue(ctx, r.c, []int{r.c.MyID()}, "ans", v)
	return nil
}

// loadFile is -L: the file's declarations on every process.
func (r *repl) loadFile(ctx context.Context, path string) error {
	_, err := script.LoadFile(ctx, r.c, r.c.Procs(), path)
	return err
}
