package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/godist/dist"

// A rule says which packages of the module a package may depend on, directly or through
// others (go list's Deps), in paths relative to the module ("" is the root package dist; a
// trailing "/..." covers a tree). The rules are docs/ARCHITECTURE.md's "What each package may
// import", kept in step with it.
type rule struct {
	pkg   string
	only  []string // its dependencies within the module must match one of these
	any   bool     // a program or the benchmarks: anything
	later bool     // a package the design names that may not exist yet
	why   string
}

// internal is what every layer may use: the internal packages, less the benchmarks' body.
const internal = "internal/..."

var rules = []rule{
	// Bottom: no package of the project.
	{pkg: "internal/payload", why: "what a message carries: the bottom of the stack"},
	{pkg: "internal/lines", why: "a line splitter for forwarded output"},
	{pkg: "internal/rawbench", why: "the raw baselines must measure the system, not godist"},
	{pkg: "internal/sched", later: true, why: "schedulers are pure logic: no sockets, no cluster"},
	{pkg: "internal/wire", only: []string{"internal/payload"}, why: "the transport knows nothing of clusters or the codec"},
	{pkg: "internal/codec", only: []string{"internal/payload"}, why: "the codec shares only the message type with the transport"},
	// The cluster core and its patterns.
	{pkg: "", only: []string{"internal/wire", "internal/payload", "internal/codec", "internal/lines", "internal/sched"},
		why: "dist links nothing that a program may not use: no interpreter, shared memory, dashboard, bars or managers"},
	// Above the core.
	{pkg: "shm", only: []string{"", internal}, why: "shared memory is a layer on the core"},
	{pkg: "script", only: []string{"", "shm", internal}, why: "the interpreter exposes the core and shared arrays"},
	{pkg: "progress", later: true, only: []string{"", internal}, why: "the bars implement dist.Progress"},
	{pkg: "darray", later: true, only: []string{"", "shm", internal}, why: "distributed arrays sit on the core's SPMD collectives"},
	{pkg: "dashboard", later: true, only: []string{"", internal}, why: "the dashboard reads the core's counters and spans"},
	// Managers: dist and the internal packages they need; mpi runs on elastic's rendezvous.
	{pkg: "ssh", only: []string{"", internal}, why: "a manager"},
	{pkg: "slurm", only: []string{"", internal}, why: "a manager"},
	{pkg: "elastic", only: []string{"", internal}, why: "a manager"},
	{pkg: "mpi", only: []string{"", "elastic", internal}, why: "a manager, on elastic's rendezvous"},
	{pkg: "internal/launcher", later: true, only: []string{"", internal}, why: "the driver's end of a launcher session, shared by the ssh and slurm managers"},
	// The test harness and the programs.
	{pkg: "disttest/...", only: []string{"", "disttest/...", internal}, why: "the harness drives the core"},
	{pkg: "internal/archtest", why: "tests only"},
	{pkg: "internal/bench", any: true, why: "the benchmarks of godist bench measure every layer"},
	{pkg: "cmd/...", any: true, why: "programs"},
	{pkg: "examples/...", any: true, why: "programs"},
}

// matches reports whether the module-relative path p is pattern or in its tree.
func matches(p, pattern string) bool {
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == tree || strings.HasPrefix(p, tree+"/")
	}
	return p == pattern
}

// ruleFor returns the rule covering p, the most specific first (an exact name before a tree).
func ruleFor(p string) (rule, bool) {
	for _, r := range rules {
		if r.pkg == p {
			return r, true
		}
	}
	for _, r := range rules {
		if strings.HasSuffix(r.pkg, "/...") && matches(p, r.pkg) {
			return r, true
		}
	}
	return rule{}, false
}

// allowed reports whether a package under r may depend on dep.
func (r rule) allowed(dep string) bool {
	if r.any {
		return true
	}
	if dep == "internal/bench" || matches(dep, "cmd/...") || matches(dep, "examples/...") {
		return false // programs: nobody imports them but programs
	}
	for _, a := range r.only {
		if matches(dep, a) {
			return true
		}
	}
	return false
}

type listed struct {
	ImportPath string
	Deps       []string
	Error      *struct{ Err string }
}

// packages lists the module's packages with their dependencies inside the module.
func packages(t *testing.T) map[string][]string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command, which lists the imports: %v", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(gobin, "list", "-json", module+"/...")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		rel := relative(p.ImportPath)
		var deps []string
		for _, d := range p.Deps {
			if d == module || strings.HasPrefix(d, module+"/") {
				deps = append(deps, relative(d))
			}
		}
		pkgs[rel] = deps
	}
	return pkgs
}

func relative(importPath string) string {
	return strings.TrimPrefix(strings.TrimPrefix(importPath, module), "/")
}

func name(rel string) string {
	if rel == "" {
		return "dist (the root package)"
	}
	return rel
}

func TestImportRules(t *testing.T) {
	pkgs := packages(t)
	if _, ok := pkgs["internal/wire"]; !ok {
		t.Fatalf("go list did not list internal/wire: %v", slices.Sorted(maps.Keys(pkgs)))
	}
	for p, deps := range pkgs {
		r, ok := ruleFor(p)
		if !ok {
			t.Errorf("%s: no import rule; add one here and in docs/ARCHITECTURE.md", name(p))
			continue
		}
		for _, d := range deps {
			if !r.allowed(d) {
				t.Errorf("%s depends on %s: not allowed (%s)", name(p), name(d), r.why)
			}
		}
	}
	// A rule for a package that is not there, and not announced, is a typo.
	for _, r := range rules {
		found := false
		for p := range pkgs {
			found = found || matches(p, r.pkg)
		}
		if !found && !r.later {
			t.Errorf("rule for %s: no such package", name(r.pkg))
		}
	}
}

// The rules bite: a dependency each forbids is reported.
func TestRulesForbid(t *testing.T) {
	for _, tc := range []struct{ pkg, dep string }{
		{"internal/wire", ""},
		{"internal/wire", "internal/codec"},
		{"internal/codec", "internal/wire"},
		{"internal/sched", ""},
		{"", "script"},
		{"", "shm"},
		{"", "progress"},
		{"", "dashboard"},
		{"", "darray"},
		{"", "ssh"},
		{"ssh", "script"},
		{"slurm", "ssh"},
		{"mpi", "ssh"},
		{"shm", "internal/bench"},
		{"script", "cmd/godist"},
	} {
		r, ok := ruleFor(tc.pkg)
		if !ok {
			t.Fatalf("no rule for %s", name(tc.pkg))
		}
		if r.allowed(tc.dep) {
			t.Errorf("%s may depend on %s", name(tc.pkg), name(tc.dep))
		}
	}
}
