// Package sched holds godist's schedulers as plain, deterministic data structures: Pmap, the
// dispatcher of one run of dist.Pmap (which items go in the next batch, how many, and what
// becomes of an item whose run failed or whose worker exited), and Tasks, the priority queue
// of a dist.TaskQueue (which queued task each process runs next).
//
// Nothing here starts a goroutine, touches a socket or reads a clock: time, measured
// durations and errors are values passed in by the caller, which owns the IO and the locking
// (the shape of etcd raft's core). So every decision can be unit-tested and fuzzed without a
// cluster, and the root package's run loops stay thin. A scheduler is not safe for concurrent
// use: its caller serialises calls.
package sched
