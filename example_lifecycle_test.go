package dist_test

import (
	"context"
	"fmt"

	"github.com/godist/dist"
)

// Lifecycle events follow each worker from launch to exit, with the reason it left.
func ExampleCluster_SubscribeLifecycle() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(0))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	done := make(chan struct{})
	c.SubscribeLifecycle(func(e dist.Event) {
		switch e.Kind {
		case dist.Starting:
			fmt.Println("starting", e.Count)
		case dist.Joined, dist.Exiting:
			fmt.Println(e.Kind, e.Pid)
		case dist.Exited:
			fmt.Println(e.Kind, e.Pid, e.Reason)
			close(done)
		}
	})
	pids, _ := c.AddProcs(ctx, nil, 1)
	c.RmProcs(ctx, pids...)
	<-done
	// Output:
	// starting 1
	// joined 2
	// exiting 2
	// exited 2 clean exit
}

// Under the master–worker topology workers talk only to the driver.
func ExampleMasterWorker() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2), dist.WithTopology(dist.MasterWorker()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, err = relay.Call(ctx, c, 2, [2]int{3, 4}) // worker 2 calls worker 3
	fmt.Println(err)
	// Output: dist: on worker 2: test.relay: dist: the cluster's topology does not connect these processes: process 2 may not connect to process 3 (topology master-worker)
}
