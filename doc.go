// Package dist is Julia-style distributed computing for Go: start worker processes on this
// machine (and, through other managers, on others), call functions on them, keep values on
// them, and move data between them.
//
// Every process of a cluster runs the same binary. dist.Main is the first line of main; in a
// worker process it serves the cluster and exits, in the driver it returns at once. The driver
// is pid 1; workers get pids 2, 3, … in the order they join, never reused.
//
//	var square = dist.NewFunc("square", func(ctx context.Context, x int) (int, error) {
//		return x * x, nil
//	})
//
//	func main() {
//		dist.Main()
//		ctx := context.Background()
//		c, err := dist.Start(ctx) // runtime.NumCPU() local workers
//		if err != nil {
//			log.Fatal(err)
//		}
//		defer c.Close()
//		v, err := square.Call(ctx, c, 2, 7) // remotecall_fetch(square, 2, 7)
//		f := square.Go(ctx, c, dist.Any, 8) // remotecall → *Future
//		w, err := f.Fetch(ctx)
//	}
//
// Functions that workers can run are package-level values made with NewFunc, so every process
// of the binary has them: Go's answer to @everywhere. Call, Go, Do and Everywhere are
// remotecall_fetch, remotecall, remote_do and @everywhere; RemoteChannel is Julia's
// RemoteChannel; Future is Julia's Future, including being passed to other processes.
//
// Values live on the process that owns them while any process holds a reference (weighted
// distributed reference counting: passing a reference sends no message, releasing one does,
// batched). Errors cross the wire with their identity: a failure of a remote function is a
// *RemoteError, and errors.Is(err, ErrProcessExited) holds whenever a process died, however
// many hops away.
//
// On one host, processes talk over unix sockets; across hosts, over TCP. Every connection
// starts with an HMAC challenge–response over the cluster cookie, which never crosses the wire.
// Bulk numeric slices travel as raw little-endian bytes, written from and read into the Go
// slices themselves.
//
// # Networks, security and topologies
//
// The cookie is WithCookie, else GODIST_COOKIE, else the file GODIST_COOKIE_FILE names, else
// random. WithTLS makes every TCP connection mutual TLS with certificates from files.
// WithNetwork and WithPortRange say where TCP workers listen (a bind address, a port range a
// firewall can open); WithTopology says which workers may connect to each other (all-to-all
// lazily by default, MasterWorker, or a CustomTopology function). WithLaunchTimeout,
// WithConnectTimeout and WithHeartbeat bound how long a worker may take to start, a
// connection to open, and a peer to answer.
//
// # Managers and lifecycle
//
// A Manager starts workers (LocalManager here; packages ssh, slurm and mpi for other
// machines); see Manager for how to write one. Workers started by something else join a
// running driver through package elastic, or ServeWorker and Cluster.AddProcess directly.
// Subscribe follows membership; SubscribeLifecycle follows every worker from Starting to
// Exited with its ExitReason (clean exit, crash, lost connection).
package dist
