package mpi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/mpi"
)

// envProgram makes the test binary, started by mpirun, the MPI program under test.
const envProgram = "GODIST_MPI_TEST_PROGRAM"

// TestMain makes the test binary usable as a worker and as the program mpirun starts. The
// program check comes after dist.Main, as a driver check must.
func TestMain(m *testing.M) {
	dist.Main()
	if os.Getenv(envProgram) != "" {
		os.Exit(program())
	}
	os.Exit(m.Run())
}

var square = dist.NewFunc("mpitest.square", func(ctx context.Context, x int) (int, error) {
	return x * x, nil
})

// rankOf reports the rank and OS pid of the process it runs on.
var rankOf = dist.NewFunc("mpitest.rank", func(ctx context.Context, _ struct{}) ([2]int, error) {
	w, err := mpi.ThisWorld()
	return [2]int{w.Rank, os.Getpid()}, err
})

// relay calls square on another worker from a worker.
var relay = dist.NewFunc("mpitest.relay", func(ctx context.Context, to int) (int, error) {
	return square.Call(ctx, dist.Current(ctx), to, to)
})

// program is what every rank runs: rank 0 drives, the others serve inside mpi.Start.
func program() int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	c, err := mpi.Start(ctx, mpi.WithTimeout(30*time.Second))
	if err != nil {
		fmt.Println("mpi program FAILED:", err)
		return 1
	}
	defer c.Close()
	w, _ := mpi.ThisWorld()
	fmt.Printf("rank 0: %d ranks joined in %v\n", w.Size, time.Since(t0).Round(time.Millisecond))
	if err := check(ctx, c, w); err != nil {
		fmt.Println("mpi program FAILED:", err)
		return 1
	}
	if err := c.Close(); err != nil {
		fmt.Println("mpi program FAILED: close:", err)
		return 1
	}
	fmt.Printf("mpi program ok: %d ranks\n", w.Size)
	return 0
}

func check(ctx context.Context, c *dist.Cluster, w mpi.World) error {
	if w.Rank != 0 {
		return fmt.Errorf("Start returned on rank %d", w.Rank)
	}
	if n := c.NWorkers(); n != w.Size-1 {
		return fmt.Errorf("%d workers for %d ranks", n, w.Size)
	}
	ranks, err := mpi.Ranks(ctx, c)
	if err != nil {
		return err
	}
	var got []int
	for _, r := range ranks {
		got = append(got, r)
	}
	slices.Sort(got)
	for i, r := range got {
		if r != i {
			return fmt.Errorf("ranks by pid %v: not each of 0..%d once", ranks, w.Size-1)
		}
	}
	if ranks[1] != 0 {
		return fmt.Errorf("the driver (pid 1) is rank %d", ranks[1])
	}
	// Every rank is a distinct process that answers calls.
	info, err := rankOf.Everywhere(ctx, c, struct{}{})
	if err != nil {
		return err
	}
	seen := map[int]bool{}
	var nets []string
	for pid, ri := range info {
		if ri[0] != ranks[pid] || seen[ri[1]] {
			return fmt.Errorf("pid %d: rank %d os pid %d (ranks %v)", pid, ri[0], ri[1], ranks)
		}
		seen[ri[1]] = true
		if pid != 1 {
			pi, _ := c.ProcInfo(pid)
			if pi.OSPid != ri[1] {
				return fmt.Errorf("pid %d: ProcInfo %+v, process says os pid %d", pid, pi, ri[1])
			}
			nets = append(nets, pi.Network)
		}
	}
	slices.Sort(nets)
	fmt.Printf("rank 0: workers listen on %v\n", slices.Compact(nets))
	host, _ := os.Hostname()
	hosts := []string{host}
	for _, pid := range c.Workers() {
		pi, _ := c.ProcInfo(pid)
		hosts = append(hosts, pi.Host)
	}
	slices.Sort(hosts)
	fmt.Printf("rank 0: ranks on hosts %v\n", slices.Compact(hosts))
	in := make([]int, 300)
	for i := range in {
		in[i] = i
	}
	out, err := dist.Pmap(ctx, c, square, in)
	if err != nil {
		return fmt.Errorf("pmap: %w", err)
	}
	for i, v := range out {
		if v != i*i {
			return fmt.Errorf("pmap: out[%d] = %d", i, v)
		}
	}
	ws := c.Workers()
	if len(ws) >= 2 {
		v, err := relay.Call(ctx, c, ws[0], ws[len(ws)-1])
		if err != nil || v != ws[len(ws)-1]*ws[len(ws)-1] {
			return fmt.Errorf("worker %d -> worker %d: %d, %v", ws[0], ws[len(ws)-1], v, err)
		}
	}
	fmt.Printf("rank 0: ranks by pid %v; pmap of %d items and a worker-to-worker call ok\n", ranks, len(in))
	return nil
}

// needMpirun skips without Open MPI's mpirun (fails with CI=true).
func needMpirun(t *testing.T) {
	t.Helper()
	disttest.Need(t, disttest.Mpirun)
	if mpi.Launched() {
		t.Fatal("the tests must not themselves run under mpirun")
	}
}

// mpirun runs the test binary as an np-rank MPI program on this host with extra environment,
// and returns its output once it has exited 0.
func mpirun(t *testing.T, np int, env ...string) string {
	t.Helper()
	return mpirunArgs(t, np, []string{"--oversubscribe", "--mca", "oob_tcp_if_include", "lo", "--mca", "btl_tcp_if_include", "lo"}, env...)
}

func mpirunArgs(t *testing.T, np int, extra []string, env ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--allow-run-as-root", "-np", fmt.Sprint(np), "-x", envProgram + "=1"}, extra...)
	for _, kv := range env {
		args = append(args, "-x", kv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mpirun", append(args, exe)...)
	cmd.Dir = t.TempDir()
	cmd.WaitDelay = 5 * time.Second
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mpirun -np %d: %v\n%s", np, err, out)
	}
	t.Logf("mpirun -np %d (%v):\n%s", np, time.Since(t0).Round(time.Millisecond), out)
	want := fmt.Sprintf("mpi program ok: %d ranks", np)
	if !strings.Contains(string(out), want) {
		t.Fatalf("no %q in the output", want)
	}
	return string(out)
}

// All ranks on this host: rendezvous in a private temporary directory, unix sockets.
func TestMpirunLocal(t *testing.T) {
	needMpirun(t)
	dir := filepath.Join(t.TempDir(), "rv")
	out := mpirun(t, 3, mpi.EnvDir+"="+dir)
	if !strings.Contains(out, "workers listen on [unix]") {
		t.Error("local ranks do not use unix sockets")
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("rendezvous directory not empty after the run: %v", left)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("rendezvous directory: %v %v, want mode 0700", fi.Mode(), err)
	}
}

// Rank 0 on TCP, as across hosts.
func TestMpirunTCP(t *testing.T) {
	needMpirun(t)
	out := mpirun(t, 4, mpi.EnvDir+"="+filepath.Join(t.TempDir(), "rv"), mpi.EnvListen+"=127.0.0.1:0")
	if !strings.Contains(out, "workers listen on [tcp]") {
		t.Error("workers of a TCP driver do not use TCP")
	}
}

// hostsEnv is the environment file of scripts/hosts.sh: test hosts h1..h3 in network
// namespaces, with sshd.
const hostsEnv = "/run/godist/hosts/env"

// One rank per test host, launched over ssh: rank 0 listens on TCP on all its interfaces and
// is advertised by its host name; the rendezvous is in $HOME/.godist/mpi, which the hosts
// share (they share the file system).
func TestMpirunHosts(t *testing.T) {
	needMpirun(t)
	b, err := os.ReadFile(hostsEnv)
	if err != nil {
		disttest.Missing(t, "the test hosts are not up ("+hostsEnv+"): run scripts/hosts.sh as root")
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok {
			env[k] = strings.Trim(v, `"'`)
		}
	}
	hosts := strings.Fields(env["GODIST_HOSTS"])
	addrs := strings.Fields(env["GODIST_HOST_ADDRS"])
	if len(hosts) < 2 || len(addrs) != len(hosts) || env["SSH_CONFIG"] == "" {
		t.Fatalf("unexpected %s: %q", hostsEnv, b)
	}
	subnet := addrs[0][:strings.LastIndexByte(addrs[0], '.')] + ".0/24"
	var hostList []string
	for _, h := range hosts {
		hostList = append(hostList, h+":1")
	}
	home := t.TempDir()
	out := mpirunArgs(t, len(hosts), []string{"--host", strings.Join(hostList, ","),
		"--mca", "plm_rsh_agent", "ssh -F " + env["SSH_CONFIG"],
		"--mca", "oob_tcp_if_include", subnet, "--mca", "btl_tcp_if_include", subnet}, "HOME="+home)
	if want := fmt.Sprintf("ranks on hosts %v", hosts); !strings.Contains(out, want) {
		t.Errorf("no %q in the output", want)
	}
	if !strings.Contains(out, "workers listen on [tcp]") {
		t.Error("ranks on other hosts do not use TCP")
	}
	left, _ := os.ReadDir(filepath.Join(home, ".godist", "mpi"))
	if len(left) != 0 {
		t.Errorf("rendezvous directory not empty after the run: %v", left)
	}
}

// The driver's address given in advance and the cookie in the environment: no file at all.
func TestMpirunDriverAddr(t *testing.T) {
	needMpirun(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a port that was free a moment ago; rank 0 listens on it
	home := t.TempDir()
	mpirun(t, 2, mpi.EnvDriver+"="+addr, dist.EnvCookie+"=mpi-test-cookie", "HOME="+home)
	if left, _ := os.ReadDir(home); len(left) != 0 {
		t.Errorf("files made with an explicit driver address: %v", left)
	}
}

// A rank whose rank 0 never shows up says where it looked, in time.
func TestNoRankZero(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rv")
	t.Setenv("OMPI_COMM_WORLD_RANK", "1")
	t.Setenv("OMPI_COMM_WORLD_SIZE", "2")
	t.Setenv(mpi.EnvKey, "lonely")
	t0 := time.Now()
	err := mpi.Serve(context.Background(), mpi.WithDir(dir), mpi.WithTimeout(300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "lonely.json")) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// A rendezvous directory others can enter is refused: it would expose the cookie.
func TestOpenDirRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OMPI_COMM_WORLD_RANK", "1")
	t.Setenv("OMPI_COMM_WORLD_SIZE", "2")
	t.Setenv(mpi.EnvKey, "k")
	err := mpi.Serve(context.Background(), mpi.WithDir(dir), mpi.WithTimeout(time.Second))
	if err == nil || !strings.Contains(err.Error(), "accessible to others") {
		t.Fatalf("err = %v", err)
	}
}

func TestThisWorld(t *testing.T) {
	for _, k := range []string{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE",
		"PMIX_RANK", "PMI_RANK", "PMI_SIZE", "OMPI_MCA_ess_base_jobid", mpi.EnvKey,
		"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
		"SLURM_STEP_NUM_NODES", "SLURM_CLUSTER_NAME"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	if _, err := mpi.ThisWorld(); !errors.Is(err, mpi.ErrNotLaunched) {
		t.Fatalf("outside mpirun: %v", err)
	}
	// A Slurm batch script has a task id but is no launch of several ranks.
	t.Setenv("SLURM_JOB_ID", "77")
	t.Setenv("SLURM_PROCID", "0")
	t.Setenv("SLURM_NTASKS", "4")
	if _, err := mpi.ThisWorld(); !errors.Is(err, mpi.ErrNotLaunched) {
		t.Fatalf("in a batch script: %v", err)
	}
	// A task of an srun step is.
	t.Setenv("SLURM_STEP_ID", "3")
	t.Setenv("SLURM_PROCID", "1")
	t.Setenv("SLURM_STEP_NUM_TASKS", "4")
	t.Setenv("SLURM_STEP_NUM_NODES", "1")
	t.Setenv("SLURM_CLUSTER_NAME", "c")
	w, err := mpi.ThisWorld()
	if err != nil || w != (mpi.World{Rank: 1, Size: 4, LocalSize: 4, Key: "slurm-c-77.3"}) {
		t.Fatalf("srun task: %+v %v", w, err)
	}
	for _, k := range []string{"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"} {
		os.Unsetenv(k)
	}
	t.Setenv("PMI_RANK", "2")
	t.Setenv("PMI_SIZE", "2")
	if _, err := mpi.ThisWorld(); err == nil {
		t.Fatal("rank 2 of 2 accepted")
	}
	t.Setenv("PMI_SIZE", "5")
	t.Setenv(mpi.EnvKey, "job7")
	w, err = mpi.ThisWorld()
	if err != nil || w != (mpi.World{Rank: 2, Size: 5, Key: "job7"}) {
		t.Fatalf("Hydra-style: %+v %v", w, err)
	}
	os.Unsetenv(mpi.EnvKey)
	t.Setenv("OMPI_COMM_WORLD_RANK", "0")
	t.Setenv("OMPI_COMM_WORLD_SIZE", "3")
	t.Setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3")
	t.Setenv("OMPI_MCA_ess_base_jobid", "4242")
	w, err = mpi.ThisWorld()
	if err != nil || w.Rank != 0 || w.Size != 3 || w.LocalSize != 3 || !strings.HasPrefix(w.Key, "ompi-4242-") {
		t.Fatalf("Open MPI: %+v %v", w, err)
	}
}

// srunProgram runs the test binary as an np-task srun step of the Slurm cluster configured by
// conf (with extra srun arguments) and returns its output once it exited 0.
func srunProgram(t *testing.T, conf, setup string, np int, extra ...string) string {
	t.Helper()
	disttest.Need(t, disttest.File("a Slurm cluster", conf, setup+" as root"))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := append([]string{"--ntasks=" + fmt.Sprint(np), "--overcommit", "--time=5", "--job-name=godist-test",
		"--chdir=" + dir, "--export=ALL," + envProgram + "=1,HOME=" + dir}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "srun", append(args, exe)...)
	cmd.Env = append(os.Environ(), "SLURM_CONF="+conf)
	cmd.WaitDelay = 5 * time.Second
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("srun: %v\n%s", err, out)
	}
	t.Logf("srun -n %d (%v):\n%s", np, time.Since(t0).Round(time.Millisecond), out)
	if want := fmt.Sprintf("mpi program ok: %d ranks", np); !strings.Contains(string(out), want) {
		t.Fatalf("no %q in the output", want)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, ".godist", "mpi")); len(left) != 0 {
		t.Errorf("rendezvous files left: %v", left)
	}
	return string(out)
}

// srun is a launcher too: the tasks of one step form the cluster (one node: unix sockets, the
// rendezvous under os.TempDir).
func TestSrun(t *testing.T) {
	disttest.Need(t, disttest.Srun)
	out := srunProgram(t, "/run/godist/slurm/slurm.conf", "scripts/slurm.sh", 3)
	if !strings.Contains(out, "workers listen on [unix]") {
		t.Error("tasks of a one-node step do not use unix sockets")
	}
}

// One task per node of the several-node Slurm cluster on the test hosts: TCP, the rendezvous
// in $HOME/.godist/mpi.
func TestSrunHosts(t *testing.T) {
	disttest.Need(t, disttest.Program("srun", "scripts/hosts.sh and scripts/slurm.sh hosts as root"))
	out := srunProgram(t, "/run/godist/slurm-hosts/slurm.conf", "scripts/hosts.sh && scripts/slurm.sh hosts", 3, "--nodes=3")
	if !strings.Contains(out, "ranks on hosts [h1 h2 h3]") || !strings.Contains(out, "workers listen on [tcp]") {
		t.Error("the tasks are not one per host, over TCP")
	}
}
