package ssh_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// TestMain makes the test binary a worker program: the manager runs it on the hosts.
func TestMain(m *testing.M) {
	// A worker of TestWorkerHandshakeTimeout hangs before it joins; its launcher, which is
	// not a worker, does not.
	if os.Getenv(dist.EnvWorker) != "" && os.Getenv(envHang) != "" {
		time.Sleep(time.Hour)
	}
	dist.Main()
	os.Exit(m.Run())
}

// envHang, set in a worker's environment, makes it hang before it prints its address.
const envHang = "SSHTEST_HANG"

// Functions the tests run on workers.
var (
	hostname = dist.NewFunc("sshtest.hostname", func(ctx context.Context, _ int) (string, error) {
		return os.Hostname()
	})
	// slowHostname takes a while, so that a Pmap keeps at most a couple of items in flight
	// per worker and every worker gets some: with instant items, the first workers' lanes
	// may drain the input before the others ask.
	slowHostname = dist.NewFunc("sshtest.slowhostname", func(ctx context.Context, _ int) (string, error) {
		time.Sleep(20 * time.Millisecond)
		return os.Hostname()
	})
	// pairHost runs on one worker, calls hostname on another and returns both hostnames:
	// a worker-to-worker call.
	pairHost = dist.NewFunc("sshtest.pairhost", func(ctx context.Context, other int) ([2]string, error) {
		me, err := os.Hostname()
		if err != nil {
			return [2]string{}, err
		}
		them, err := hostname.Call(ctx, dist.Current(ctx), other, 0)
		return [2]string{me, them}, err
	})
	// whereAmI returns the worker's working directory and the value of GODIST_TEST_VAR.
	whereAmI = dist.NewFunc("sshtest.where", func(ctx context.Context, _ int) ([2]string, error) {
		wd, err := os.Getwd()
		return [2]string{wd, os.Getenv("GODIST_TEST_VAR")}, err
	})
	noop    = dist.NewFunc("sshtest.noop", func(ctx context.Context, _ int) (int, error) { return 0, nil })
	exePath = dist.NewFunc("sshtest.exe", func(ctx context.Context, _ int) (string, error) {
		return os.Executable()
	})
	sleepFor = dist.NewFunc("sshtest.sleep", func(ctx context.Context, d time.Duration) (string, error) {
		select {
		case <-time.After(d):
			return "slept", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})

	sigMu sync.Mutex
	sigCh chan os.Signal
	// armSigint makes this worker catch SIGINT instead of dying of it.
	armSigint = dist.NewFunc("sshtest.armsigint", func(ctx context.Context, _ int) (int, error) {
		sigMu.Lock()
		defer sigMu.Unlock()
		if sigCh == nil {
			sigCh = make(chan os.Signal, 1)
			signal.Notify(sigCh, os.Interrupt)
		}
		return os.Getpid(), nil
	})
	// awaitSigint arrives at started, then blocks until the worker receives SIGINT and says
	// where it got it.
	awaitSigint = dist.NewFunc("sshtest.awaitsigint", func(ctx context.Context, started *disttest.Barrier) (string, error) {
		sigMu.Lock()
		ch := sigCh
		sigMu.Unlock()
		if ch == nil {
			return "", fmt.Errorf("not armed")
		}
		if err := started.Arrive(ctx); err != nil {
			return "", err
		}
		select {
		case s := <-ch:
			h, _ := os.Hostname()
			return fmt.Sprintf("%v on %s", s, h), nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
)

// testHosts is what scripts/hosts.sh wrote in its env file, as the tests use it.
type testHosts struct {
	names  []string
	addrs  []string
	config string // ssh_config for the hosts
	known  string // known_hosts
	prefix string // netns and veth name prefix
}

// needHosts returns the test hosts (three at least), or skips the test when scripts/hosts.sh
// has not been run (and fails it under CI=true, where the hosts must be up).
func needHosts(t *testing.T) testHosts {
	t.Helper()
	e := disttest.Hosts(t, 3)
	return testHosts{names: e.Names, addrs: e.Addrs, config: e.SSHConfig, known: e.KnownHosts, prefix: e.Prefix}
}
