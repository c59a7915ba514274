package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestREPL types a whole session into `godist repl -p 2` running in a tmux pane: every example
// of ClusterUtils' README in its Go form, with results of the same shape (a map by pid, a
// vector, a matrix, a number), a multi-line function, errors that leave the session and the
// workers alive, an interrupted entry, the history, and a Ctrl-D that leaves no process behind.
func TestREPL(t *testing.T) {
	needTmux(t)
	bin := godistBinary(t)
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp") // the cluster's socket directory goes here
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	hist := filepath.Join(dir, "history")
	primes, err := filepath.Abs(filepath.Join("..", "..", "examples", "scripts", "primes.go"))
	if err != nil {
		t.Fatal(err)
	}
	p := startPane(t, []string{"TMPDIR=" + tmp, "GODIST_HISTORY=" + hist, "HOME=" + dir},
		"sh", "-c", "cd "+dir+" && exec "+bin+" repl -p 2 -L "+primes)
	p.expect(60*time.Second, `driver 1, workers 2, 3`)

	// -L loaded the script's declarations everywhere; :include loads another file.
	p.run(":reap all countPrimes(0, 100)", `with 3 entries:\n  1 => 25\n  2 => 25\n  3 => 25\n`)
	extra := filepath.Join(dir, "extra.go")
	if err := os.WriteFile(extra, []byte("package main\n\nfunc twice(x int) int { return 2 * x }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.run(":include " + extra)
	p.run(":reap workers twice(myid())", `  2 => 4\n  3 => 6\n`)

	// The workers' OS pids, to check at the end that they are gone.
	out := p.run(":procs", `(?m)^2\s+\S+\s+\d+\s+unix`, `(?m)^3\s+\S+\s+\d+\s+unix`)
	var workerPids []int
	for _, m := range regexp.MustCompile(`(?m)^[23]\s+\S+\s+(\d+)\s+unix`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		workerPids = append(workerPids, n)
	}
	if len(workerPids) != 2 {
		t.Fatalf("worker pids from :procs: %v\n%s", workerPids, out)
	}

	// Go on the driver: expressions print their value, statements do not.
	p.run("x := 2", `godist> x := 2\ngodist>$`)
	p.run("x * 21", `(?m)^42$`)

	// README: reap(2, :(x = myid())) → 2 => 2; reap(2, :(sqrt(x))) → 2 => 1.41421;
	// sow(2, :y, myid()) (myid() evaluated by the caller); reap(2, :y) → 2 => 1.
	p.run(":reap 2 x := myid()", `map\[int\]any with 1 entry:\n  2 => 2\n`)
	p.run(":reap 2 math.Sqrt(float64(x))", `  2 => 1.41421\n`)
	p.run(":sowvalue 2 y = myid()")
	p.run(":reap 2 y", `  2 => 1\n`)

	// README: reduce(+, values(reap(pids, :(rand(5).^2)))) → a 5-element vector.
	p.run("pids := workers()")
	p.run(":reap pids func() []float64 { v := make([]float64, 5); for i := range v { r := rand.Float64(); v[i] = r * r }; return v }()",
		`with 2 entries:\n  2 => \[\S+ \S+ \S+ \S+ \S+\]\n  3 => \[`)
	p.run("total := make([]float64, 5)\nfor _, v := range ans {\n\tfor i, x := range v.([]float64) {\n\t\ttotal[i] += x\n\t}\n}",
		`   \.\.\.> }\ngodist>$`)
	p.run("total", `5-element \[\]float64:\n( \d\.\d+\n){5}`)

	// README: sow(3, :bob, pi^2); @fetchfrom 3 bob → 9.869604401089358.
	p.run(":sow 3 bob = math.Pi * math.Pi")
	p.run("@fetchfrom 3 bob", `(?m)^9\.869604401089358$`)
	// README: sow(pids, :morebob, :(100 + myid())); reap(pids, :morebob) → 2 => 102, 3 => 103.
	p.run(":sow pids morebob = 100 + myid()")
	p.run(":reap pids morebob", `with 2 entries:\n  2 => 102\n  3 => 103\n`)
	// (sow(…; mod=ClusterUtils) has no counterpart: a process has one namespace, Go's package
	// main of the interpreter.)

	// A multi-line function defined everywhere, as a Julia user would with @everywhere.
	p.run(":everywhere func randn(r, c int) [][]float64 {\n\tm := make([][]float64, r)\n\tfor i := range m {\n\t\tm[i] = make([]float64, c)\n\t\tfor j := range m[i] {\n\t\t\tm[i][j] = rand.NormFloat64()\n\t\t}\n\t}\n\treturn m\n}")
	// README: sow(pids, :bar, :(randn(4,4))); sow(pids, :(bar[1:2,:]), 0);
	// reap(pids, :bar)[pids[1]] → a 4×4 matrix whose first two rows are 0.
	p.run(":sow pids bar = randn(4, 4)")
	p.run(":sow pids bar[0:2] = 0")
	p.run("bars := :reap pids bar")
	p.run("bars[pids[0]]", `4×4 \[\]\[\]float64:\n +0 +0 +0 +0\n +0 +0 +0 +0\n( +-?\d\S* +-?\d\S* +-?\d\S* +-?\d\S*\n){2}`)
	// README: sow(pids, :somedict, :(Dict(:buzz=>randn(2,2), :badger=>"hello")));
	// sow(pids, :(somedict[:buzz][:,:]), pi); reap(pids, :(somedict[:buzz]))[pids[1]].
	p.run(`:sow pids somedict = map[string]any{"buzz": randn(2, 2), "badger": "hello"}`)
	p.run(`:sow pids somedict["buzz"].([][]float64)[:] = math.Pi`)
	p.run(`:fetchfrom pids[0] somedict["buzz"]`, `2×2 \[\]\[\]float64:\n 3\.14159 3\.14159\n 3\.14159 3\.14159\n`)
	p.run(`:fetchfrom 3 somedict["badger"]`, `(?m)^"hello"$`)

	// README: describepids(); describepids(remote=1); describepids(remote=2). All processes
	// share the driver's host here, so the remote-only view is empty.
	p.run(":topology", `map\[int\]\[\]int with 0 entries:`)
	p.run(":topology local", `with 1 entry:\n  1 => \[1 2 3\]`)
	p.run("topo := :topology all")
	p.run("topo", `with 1 entry:\n  1 => \[1 2 3\]`)
	// describepids(procs(); filterfn=(x)->ismatch(r"tesla", x)): a host name filter.
	p.run(":topology all ~^no-such-host", `with 0 entries:`)
	p.run(":topology all workers ~.", `with 1 entry:\n  2 => \[2 3\]`)

	// README: broadcast_shared(topo, Float32, rand(4,4), :foo); sow(reps, :(foo[1,:]), pi);
	// reap(someworkers, :(foo[1:2,:])) → a 2×4 Float32 matrix whose first row is π: the write
	// on the host's representative is seen by the other processes of that host.
	p.run(":broadcastshared foo = func() [][]float32 { m := make([][]float32, 4); for i := range m { m[i] = make([]float32, 4); for j := range m[i] { m[i][j] = rand.Float32() } }; return m }()",
		`foo shared on 1 host\(s\), representatives 1\n`)
	p.run("reps := []int{}\nfor k := range topo {\n\treps = append(reps, k)\n}")
	p.run(":spawnat reps for j := 0; j < 4; j++ { foo[j*4] = float32(math.Pi) }") // foo is column-major
	p.run("someworkers := []int{reps[0] + 1}")
	p.run(":everywhere func rows(a []float32, n, lo, hi int) [][]float32 {\n\tout := make([][]float32, hi-lo)\n\tfor i := range out {\n\t\tout[i] = make([]float32, len(a)/n)\n\t\tfor j := range out[i] {\n\t\t\tout[i][j] = a[j*n+lo+i]\n\t\t}\n\t}\n\treturn out\n}")
	p.run("workerslices := :reap someworkers rows(foo, 4, 0, 2)")
	p.run("workerslices[someworkers[0]]", `2×4 \[\]\[\]float32:\n +3\.14159 +3\.14159 +3\.14159 +3\.14159\n( +\d\S*){4}\n`)

	// README: sow(pids, :x, :(myid()^2*randn(3))); stitch(pids, :x) → 6 elements, pid order.
	p.run(":sow pids x = func() []float64 { v := make([]float64, 3); for i := range v { v[i] = float64(myid()*myid()) * rand.NormFloat64() }; return v }()")
	stitched := p.run(":stitch pids x", `6-element \[\]float64:\n( -?\d\S*\n){6}`)
	reaped := p.run(":reap pids x")
	for _, pid := range []string{"2", "3"} {
		m := regexp.MustCompile(`  ` + pid + ` => \[(.*)\]`).FindStringSubmatch(reaped)
		if m == nil || !strings.Contains(strings.Join(strings.Fields(stitched), " "), m[1]) {
			t.Errorf("stitch does not hold pid %s's x in order:\n%s\n%s", pid, stitched, reaped)
		}
	}

	// README, message passing: a MessageDict on every worker, each writes its own slot, swap.
	p.run("remotes := workers()")
	p.run("msgmaster := map[int]any{}\nfor _, k := range remotes {\n\tmsgmaster[k] = 0\n}")
	p.run(":sowvalue remotes somemsg = msgmaster")
	p.run("somemsg", `error: script: pid 1: .*undefined: somemsg`) // isdefined(:somemsg) → false
	p.run(":fetchfrom remotes[0] somemsg", `with 2 entries:\n  2 => 0\n  3 => 0\n`)
	p.run("for _, k := range remotes {\n\tspawnat(k, fmt.Sprintf(\"somemsg[%d] = %d\", k, 2*k))\n}")
	p.run(":fetchfrom remotes[0] somemsg", `with 2 entries:\n  2 => 4\n  3 => 0\n`)
	p.run(":swapmsgs remotes somemsg")
	p.run(":fetchfrom remotes[0] somemsg", `with 2 entries:\n  2 => 4\n  3 => 6\n`)
	p.run(":timeit 20 :swapmsgs workers somemsg", `(?m)^\d\.\d+(e-\d+)?$`)
	p.run(":collectmsgs somemsg remotes", `with 2 entries:\n  2 => 4\n  3 => 6\n`)

	// README: save("temp.jlf", randn(5)); load("temp.jlf"); save("temp.jlf", :X, :R).
	p.run(":save temp.cbor = []float64{-1.41679, -1.2292, 0.103825, 0.0804196, 1.4737}")
	p.run(":load temp.cbor", `5-element \[\]float64:\n -1\.41679\n -1\.2292\n 0\.103825\n 0\.0804196\n 1\.4737\n`)
	p.run("R := []int{1, 2, 3}")
	p.run(`X := "Fnordic"`)
	p.run(":save temp.cbor X R")
	p.run(":load temp.cbor", `map\[string\]any with 2 entries:\n  "R" => \[1 2 3\]\n  "X" => "Fnordic"\n`)

	// Inspection and membership.
	p.run(":vars 3", `pid 3:\n(?s).*  bob +float64 `)
	p.run(":mem", `(?m)^ +1 +\S+ +\d+ +\d+\.\d`, `(?m)^ +3 +\S+ +\d+ +\d+\.\d`)
	p.run(":clear 3 bob")
	p.run(":reap 3 bob", `  3 => 0\n`)
	p.run(":clear 2")
	p.run(":reap 2 y", `error: script: pid 2: .*undefined: y`)
	p.run(`reap([]int{2}, "myid()")`, `  2 => 2\n`)
	p.run(":addprocs 1", `added 4\n`)
	p.run(":reap workers myid()", `with 3 entries:\n  2 => 2\n  3 => 3\n  4 => 4\n`)
	p.run(":rmprocs 4", `removed 4; workers now 2, 3\n`)

	// A command's value assigned to a driver variable, over several lines.
	p.run("thrice := :reap workers func() int {\n\treturn 3 * myid()\n}()")
	p.run("thrice", `with 2 entries:\n  2 => 6\n  3 => 9\n`)

	// A multi-line function on the driver.
	p.run("func fib(n int) int {\n\tif n < 2 {\n\t\treturn n\n\t}\n\treturn fib(n-1) + fib(n-2)\n}")
	p.run("fib(20)", `(?m)^6765$`)

	// Errors print and the session goes on; a worker's panic leaves it alive.
	p.run("undefinedThing + 1", `error: script: pid 1: 1:1: undefined: undefinedThing`)
	p.run(":reap 2 1 / (myid() - 2)", `error: script: pid 2: .*divide by zero`)
	p.run(":reap 2 myid()", `  2 => 2\n`)
	p.run(":frobnicate", `error: unknown command :frobnicate`)
	p.run(":sow 2 nothing to assign", `error: usage: :sow PIDS TARGET = EXPR`)
	// Ctrl-C drops a half-typed entry; and interrupts one that runs forever.
	// (Ctrl-C is a key only while liner reads a line; between lines it is a signal, which the
	// REPL ignores, so the test waits for the continuation prompt before pressing it.)
	p.typeLine("func broken() {")
	p.waitLast(`   ...>`)
	p.keys("C-c")
	p.run("1 + 2", `(?m)^3$`)
	p.typeLine("for {}")
	// The signal may come before the evaluation listens for it: press until it is heard.
	deadline := time.Now().Add(30 * time.Second)
	for !p.shows(`error: interrupted`) {
		if time.Now().After(deadline) {
			t.Fatalf("Ctrl-C did not interrupt an endless loop:\n%s", strings.Join(p.lines(), "\n"))
		}
		p.keys("C-c")
		time.Sleep(500 * time.Millisecond)
	}
	p.expect(30*time.Second, `error: interrupted`)
	p.run("fib(10)", `(?m)^55$`)

	// History: Up recalls earlier entries, a multi-line one as one line that still works.
	p.keys("Up")
	p.run("", `godist> fib\(10\)\n55\n`)
	p.keys("C-r")
	p.tmux("send-keys", "-l", "func fib")
	p.run("", `godist> func fib\(n int\) int \{ if n < 2 \{ return n; \}; return fib\(n-1\) \+ fib\(n-2\); \}\ngodist>$`)
	p.run(":help", `Commands`, `:reap PIDS EXPR`, `:sow PIDS TARGET = EXPR`)

	// Ctrl-D: the REPL exits with status 0 and takes its workers and sockets with it.
	p.keys("C-d")
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Fatalf("godist repl exited with status %d:\n%s", code, strings.Join(p.lines(), "\n"))
	}
	deadline = time.Now().Add(10 * time.Second)
	for _, pid := range workerPids {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("worker process %d outlived the REPL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
	b, err := os.ReadFile(hist)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{":reap 2 x := myid()\n", "fib(20)\n", "func fib(n int) int { if n < 2 {"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("history file lacks %q:\n%s", want, b)
		}
	}
}

// TestRunScript runs the example script, whose main counts primes on the workers.
func TestRunScript(t *testing.T) {
	bin := godistBinary(t)
	tmp := t.TempDir()
	cmd := exec.Command(bin, "run", "-p", "2", filepath.Join("..", "..", "examples", "scripts", "primes.go"))
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("godist run: %v\n%s", err, out)
	}
	// π(2,000,000) = 148933; each worker counted its own block.
	for _, want := range []string{"worker 2: 78498 primes in [2, 1000001)", "worker 3: 70435 primes in [1000001, 2000000)",
		"148933 primes below 2000000, counted by 2 workers"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Arguments reach the script as args.
	out, err = exec.Command(bin, "run", "-p", "2", filepath.Join("..", "..", "examples", "scripts", "primes.go"), "100").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "25 primes below 100, counted by 2 workers") {
		t.Errorf("godist run primes.go 100: %v\n%s", err, out)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
}

// TestRunWorkerOutput: workers' lines go to stdout by default, as Julia's do, and to stderr
// with -worker-output stderr, which leaves stdout to the program alone.
func TestRunWorkerOutput(t *testing.T) {
	bin := godistBinary(t)
	file := filepath.Join(t.TempDir(), "hello.go")
	src := "package main\n\nimport \"fmt\"\n\nvar _ = announce()\n\n" +
		"func announce() int {\n\tif myid() != 1 {\n\t\tfmt.Println(\"hello from\", myid())\n\t}\n\treturn 0\n}\n\n" +
		"func main() { fmt.Println(\"main done\") }\n"
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (stdout, stderr string) {
		t.Helper()
		var o, e strings.Builder
		cmd := exec.Command(bin, append([]string{"run", "-p", "2"}, append(args, file)...)...)
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("godist run %v: %v\n%s%s", args, err, o.String(), e.String())
		}
		return o.String(), e.String()
	}
	lines := []string{"From worker 2: hello from 2", "From worker 3: hello from 3"}
	out, _ := run()
	for _, want := range append(lines, "main done") {
		if !strings.Contains(out, want) {
			t.Errorf("default: stdout lacks %q:\n%s", want, out)
		}
	}
	out, errOut := run("-worker-output", "stderr")
	if out != "main done\n" {
		t.Errorf("-worker-output stderr: stdout is %q, want only the program's line", out)
	}
	for _, want := range lines {
		if !strings.Contains(errOut, want) {
			t.Errorf("-worker-output stderr: stderr lacks %q:\n%s", want, errOut)
		}
	}
	cmd := exec.Command(bin, "run", "-p", "1", "-worker-output", "file", file)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "want stdout or stderr") {
		t.Errorf("-worker-output file: %v\n%s", err, b)
	}
	// -p below 1 is a mistake, not a request for the default.
	for _, p := range []string{"0", "-1"} {
		for _, sub := range []string{"run", "repl"} {
			args := []string{sub, "-p", p}
			if sub == "run" {
				args = append(args, file)
			}
			b, err := exec.Command(bin, args...).CombinedOutput()
			if err == nil || !strings.Contains(string(b), "at least 1 worker") {
				t.Errorf("godist %s -p %s: %v\n%s", sub, p, err, b)
			}
		}
	}
}

// TestRunScriptErrors: a script's mistakes are reported with the file and the position, and
// the exit status says so.
func TestRunScriptErrors(t *testing.T) {
	bin := godistBinary(t)
	dir := t.TempDir()
	cases := []struct{ src, want string }{
		{"package main\n\nfunc main() {\n\tx := undefinedThing\n}\n", "bad.go: script: pid 1: 4:7: undefined: undefinedThing"},
		{"package main\n\nfunc f() int { return 1 }\n", "bad.go has no func main"},
		{"package main\n\nfunc main() {\n\tvar m map[string]int\n\tm[\"a\"] = 1\n}\n", "panic: assignment to entry in nil map"},
		{"package main\n\nfunc main() {\n\treap([]int{1}, \"1\")\n}\n", "pid 1 is this process"},
		{"package main\n\nfunc main( {\n}\n", "bad.go:3:12: expected"},
	}
	for _, c := range cases {
		file := filepath.Join(dir, "bad.go")
		if err := os.WriteFile(file, []byte(c.src), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "run", "-p", "1", file).CombinedOutput()
		if err == nil {
			t.Errorf("%q: exit status 0:\n%s", c.src, out)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%q: output lacks %q:\n%s", c.src, c.want, out)
		}
	}
}

// TestMadvFree: the command runs with GODEBUG's madvdontneed=0 added to what the user set,
// unless the user set madvdontneed. (Its workers get it from dist.WorkerEnv, tested in dist.)
func TestMadvFree(t *testing.T) {
	bin := godistBinary(t)
	for _, c := range []struct{ set, want string }{
		{"", "madvdontneed=0"},
		{"gctrace=0", "gctrace=0,madvdontneed=0"},
		{"madvdontneed=1", "madvdontneed=1"},
	} {
		cmd := exec.Command(bin, "version")
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") }), "GODEBUG="+c.set)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("GODEBUG=%s: %v\n%s", c.set, err, out)
		}
		if want := "\nGODEBUG=" + c.want + "\n"; !strings.Contains(string(out), want) {
			t.Errorf("GODEBUG=%s: output lacks %q:\n%s", c.set, want, out)
		}
	}
}
