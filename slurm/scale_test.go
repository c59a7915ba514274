package slurm_test

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/slurm"
)

// Hundreds of workers over the three nodes of the hosts' cluster start as one step per node:
// a job of 6 tasks (2 CPUs a node) runs 300 light workers with WithOverlap. Killing one ends
// it alone; Close ends the steps.
func TestHostsHundredsOfWorkersOneStepPerNode(t *testing.T) {
	needCluster(t, hostsConf, "scripts/hosts.sh && scripts/slurm.sh hosts")
	if testing.Short() {
		t.Skip("300 workers under Slurm: skipped with -short")
	}
	const n = 300
	out, err := exec.Command("salloc", "--no-shell", "--immediate=60", "--nodes=3", "--ntasks=6", "--time=5", "--job-name=godist-test").CombinedOutput()
	if err != nil {
		t.Fatalf("salloc: %v: %s", err, out)
	}
	var job string
	for _, f := range strings.Fields(string(out)) {
		if _, err := strconv.Atoi(f); err == nil {
			job = f
		}
	}
	if job == "" {
		t.Fatalf("no job id in %q", out)
	}
	defer exec.Command("scancel", job).Run()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := slurm.New(slurm.WithJob(job), slurm.WithOverlap())
	defer m.Close()
	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(n), dist.WithOutput(&disttest.Output{}),
		dist.WithLaunchTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nodes, err := checkWorkers(ctx, c, job, n)
	if err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	for _, node := range nodes {
		perNode[node]++
	}
	if len(perNode) != 3 || perNode["h1"] != n/3 || perNode["h2"] != n/3 || perNode["h3"] != n/3 {
		t.Errorf("workers per node %v, want %d on each of h1 h2 h3", perNode, n/3)
	}
	if steps := squeue(t, "--steps", "--jobs="+job); len(steps) != 3 {
		t.Errorf("job %s has steps %v, want 3 (one per node)", job, steps)
	}

	ex, stop := watch(c)
	defer stop()
	ws := c.Workers()
	victim := ws[n/2]
	osPid := disttest.Kill(t, c, victim)
	if err := disttest.WaitGone(c, victim, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, time.Minute, "the killed worker reported gone", func() bool { return ex.has(victim) })
	if _, err := square.On(ctx, c, slices.DeleteFunc(slices.Clone(ws), func(p int) bool { return p == victim }), 3); err != nil {
		t.Errorf("the other workers after the kill: %v", err)
	}
	ex.mu.Lock()
	if len(ex.got) != 1 {
		t.Errorf("workers reported gone: %v, want only %d", ex.got, victim)
	}
	ex.mu.Unlock()
	if syscall.Kill(osPid, 0) == nil && disttest.Alive(osPid) {
		t.Errorf("killed worker (os pid %d) still alive", osPid)
	}

	var osPids []int
	for _, pid := range c.Workers() {
		info, _ := c.ProcInfo(pid)
		osPids = append(osPids, info.OSPid)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The nodes share this machine's process table.
	disttest.Eventually(t, time.Minute, "every worker gone after Close", func() bool {
		return !slices.ContainsFunc(osPids, disttest.Alive)
	})
	disttest.Eventually(t, time.Minute, "the steps of job "+job+" ended", func() bool {
		return len(squeue(t, "--steps", "--jobs="+job)) == 0
	})
}
