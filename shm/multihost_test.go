package shm_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/shm"
	"github.com/godist/dist/ssh"
)

// printed is a SharedArray printed in the process it arrives at.
var printed = dist.NewFunc("shmtest.printed", func(ctx context.Context, s *shm.SharedArray[int64]) (string, error) {
	return s.String(), nil
})

var hostAndFoo = dist.NewFunc("shmtest.hostAndFoo", func(ctx context.Context, _ struct{}) (string, error) {
	h, _ := os.Hostname()
	a, err := shm.LookupArray[float32]("foo")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %v", h, a.At(0, 0)), nil
})

// TestMultiHost runs two workers on each of two network-namespace hosts (distinct hostnames,
// reached over ssh): topology, the one-host rule of SharedArray, an array on a host that is not
// the caller's printed from everywhere, and broadcast_shared with one copy per host.
func TestMultiHost(t *testing.T) {
	hs := disttest.Hosts(t, 2)
	h1, h2, config := hs.Names[0], hs.Names[1], hs.SSHConfig
	var ms []ssh.Machine
	for _, h := range []string{h1, h2} {
		m, err := ssh.ParseMachine(h, 2)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	mgr, err := ssh.New(ms, ssh.Options{Flags: []string{"-F", config}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := startWith(t, 4, dist.WithManager(mgr))
	ctx := ctxT(t)
	hosts, err := shm.Hosts(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	byHost := map[string][]int{}
	for p, h := range hosts {
		if p != 1 {
			byHost[h] = append(byHost[h], p)
		}
	}
	for _, ps := range byHost {
		slices.Sort(ps)
	}
	on1, on2 := byHost[h1], byHost[h2]
	if len(on1) != 2 || len(on2) != 2 {
		t.Fatalf("workers by host %v", byHost)
	}

	// Topology: remote (default), local, all, filtered; and its inverse.
	topo, err := shm.DescribePids(ctx, c, shm.Query{})
	if err != nil {
		t.Fatal(err)
	}
	want := shm.Topology{on1[0]: on1, on2[0]: on2}
	if !equalTopo(topo, want) {
		t.Fatalf("remote topology %v, want %v", topo, want)
	}
	if local, _ := shm.DescribePids(ctx, c, shm.Query{Select: shm.Local}); !equalTopo(local, shm.Topology{1: {1}}) {
		t.Fatalf("local topology %v", local)
	}
	if all, _ := shm.DescribePids(ctx, c, shm.Query{Select: shm.All}); len(all) != 3 || !slices.Equal(all[1], []int{1}) {
		t.Fatalf("all %v", all)
	}
	only2, _ := shm.DescribePids(ctx, c, shm.Query{HostFilter: func(h string) bool { return h == h2 }})
	if !equalTopo(only2, shm.Topology{on2[0]: on2}) {
		t.Fatalf("filtered %v", only2)
	}
	inv := shm.InvTopology(topo)
	if inv[on1[1]] != on1[0] || inv[on2[1]] != on2[0] {
		t.Fatalf("inverse %v", inv)
	}
	if lp, err := workerLocalPids.Call(ctx, c, on2[1], struct{}{}); err != nil || !slices.Equal(lp, on2) {
		t.Fatalf("LocalPids on %d: %v, %v", on2[1], lp, err)
	}

	// A SharedArray spans one host.
	if _, err := shm.NewSharedArray[int64](ctx, c, []int{4}, shm.WithPids(on1[0], on2[0])); err == nil || !strings.Contains(err.Error(), "several hosts") {
		t.Fatalf("array across hosts: %v", err)
	}
	// On h1, made by its lowest pid for a caller elsewhere; printed from the driver and from h2.
	s, err := shm.NewSharedArray[int64](ctx, c, []int{2, 2}, shm.WithPids(on1...), shm.WithInit(fillMine))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if s.Local() || s.Owner() != on1[0] || s.Host() != h1 {
		t.Fatalf("local %v owner %d host %s", s.Local(), s.Owner(), s.Host())
	}
	wantPrint := fmt.Sprintf("2×2 SharedArray[int64] on %s, pids %v:\n  %d  %d\n  %d  %d", h1, on1, on1[0], on1[1], on1[0], on1[1])
	if got := s.String(); got != wantPrint {
		t.Errorf("driver prints\n%s\nwant\n%s", got, wantPrint)
	}
	for _, p := range []int{on2[0], on1[1]} {
		if got, err := printed.Call(ctx, c, p, s); err != nil || got != wantPrint {
			t.Errorf("process %d prints\n%s (%v)\nwant\n%s", p, got, err, wantPrint)
		}
	}
	// The h1 worker that did not create it writes; the creator reads, same memory.
	if _, err := writeAt.Call(ctx, c, on1[1], at{A: s, Idx: []int{1, 1}, V: 42}); err != nil {
		t.Fatal(err)
	}
	if v, err := readAt.Call(ctx, c, on1[0], at{A: s, Idx: []int{1, 1}}); err != nil || v != 42 {
		t.Fatalf("owner reads %d, %v", v, err)
	}
	if _, err := readAt.Call(ctx, c, on2[0], at{A: s, Idx: []int{0, 0}}); err == nil {
		t.Fatal("a process on h2 indexed an array of h1")
	}

	// broadcast_shared: one copy per host, bound as foo; each representative writes its
	// copy's row 0, and the other process of each host sees its own host's value.
	value := make([]float32, 16)
	for i := range value {
		value[i] = float32(i)
	}
	arrs, err := shm.BroadcastShared(ctx, c, topo, value, []int{4, 4}, "foo")
	if err != nil {
		t.Fatal(err)
	}
	defer shm.UnbindShared(ctx, c, topo, "foo")
	if len(arrs) != 2 {
		t.Fatalf("%d arrays", len(arrs))
	}
	for rep, a := range arrs {
		defer a.Release()
		if !slices.Equal(a.Procs(), topo[rep]) {
			t.Fatalf("array of %d spans %v", rep, a.Procs())
		}
	}
	for _, rep := range topo.Reps() {
		if _, err := setRow.Call(ctx, c, rep, rowReq{Name: "foo", Row: 0, V: float32(rep) * math.Pi}); err != nil {
			t.Fatal(err)
		}
	}
	for _, rep := range topo.Reps() {
		other := topo[rep][1]
		got, err := hostAndFoo.Call(ctx, c, other, struct{}{})
		if want := fmt.Sprintf("%s %v", hosts[other], float32(rep)*math.Pi); err != nil || got != want {
			t.Errorf("process %d: %q (%v), want %q", other, got, err, want)
		}
	}
}

var workerLocalPids = dist.NewFunc("shmtest.localPids", func(ctx context.Context, _ struct{}) ([]int, error) {
	return shm.LocalPids(ctx, dist.Current(ctx))
})

func equalTopo(a, b shm.Topology) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
