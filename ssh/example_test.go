package ssh_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"

	"github.com/godist/dist"
	"github.com/godist/dist/ssh"
)

func ExampleParseMachine() {
	m, err := ssh.ParseMachine("alice@node7:2222 10.0.0.7:9100", ssh.Auto)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.User, m.Host, m.Port, m.BindAddr, m.BindPort, m.Count == ssh.Auto)
	// Output: alice node7 2222 10.0.0.7 9100 true
}

// A machine file in the form of Julia's --machine-file: a count (or auto, the host's CPU
// count) before '*', then the host and the workers' bind address.
func ExampleParseMachines() {
	file := `# two hosts
auto*node1
2*alice@node2:2222 10.0.0.2:9100
`
	ms, err := ssh.ParseMachines(strings.NewReader(file))
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range ms {
		fmt.Println(m, m.Count)
	}
	// Output:
	// node1 -1
	// alice@node2:2222 10.0.0.2:9100 2
}

// Workers on two hosts: as many as node1 has CPUs, and two on node2, whose workers listen on
// a given address and ports 9100 and 9101. The hosts are reached with the user's ssh
// configuration plus a key; the driver's binary is copied where it is missing. The example is
// compiled but not run by go test: it needs real hosts (the package's tests use network
// namespaces set up by scripts/hosts.sh).
func ExampleNew() {
	dist.Main() // first statement of main(): a worker never returns from it

	ctx := context.Background()
	node1, _ := ssh.ParseMachine("node1", ssh.Auto)
	node2, _ := ssh.ParseMachine("alice@node2 10.0.0.2:9100", 2)
	m, err := ssh.New([]ssh.Machine{node1, node2}, ssh.Options{
		Flags:       []string{"-i", "/home/alice/.ssh/cluster_ed25519"},
		MaxParallel: 10,
		Env:         []string{"OMP_NUM_THREADS=1"},
		Logger:      slog.Default(), // each host's progress: session up, workers ready
	})
	if err != nil {
		log.Fatal(err)
	}
	c, err := dist.Start(ctx, dist.WithWorkers(0))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	pids, err := ssh.AddProcs(ctx, c, m)
	if err != nil {
		log.Println(err) // e.g. "node2: ssh exited 255: Permission denied (publickey)"
	}
	for _, pid := range pids {
		info, _ := c.ProcInfo(pid)
		fmt.Println(pid, info.Host)
	}
}
