// Package mpi forms a godist cluster from the processes of an MPI launch: a program started
// with mpirun (Open MPI) calls Start, rank 0 becomes the driver (pid 1) and every other rank
// joins it as a worker. No MPI library is used: the launcher only starts the processes and
// tells each its rank; godist's own transport carries the calls. It is the counterpart of
// MPIClusterManagers.jl's start_main_loop(TCP_TRANSPORT_ALL), where rank 0 is the master and
// the other ranks are its workers.
//
//	func main() {
//		dist.Main()
//		c, err := mpi.Start(context.Background()) // ranks > 0 serve here and exit
//		if err != nil {
//			log.Fatal(err)
//		}
//		defer c.Close() // rank 0: ends the other ranks too
//		... // the driver's work: Pmap, calls on c.Workers(), ...
//	}
//
// # How the ranks find rank 0
//
// Rank 0 accepts workers with package elastic, until all ranks have joined: its listener is
// for the launch's ranks only, and closes then. The other ranks learn its address and the
// cluster cookie from a rendezvous file that rank 0 writes, named after the launch's job id
// (Open MPI's OMPI_MCA_ess_base_jobid, with mpirun's own address so that a stale file of an
// earlier launch is never taken for this one). The file is readable by its owner only,
// in a directory only the owner can enter, and is removed once every rank has joined. When
// all ranks run on one host (OMPI_COMM_WORLD_LOCAL_SIZE equals the world size) the directory
// is under os.TempDir and the ranks talk over unix sockets; across hosts it must be a
// directory every host sees: $HOME/.godist/mpi by default (home directories are usually
// shared on clusters), or WithDir / GODIST_MPI_DIR, and rank 0 listens on TCP.
//
// Without a shared directory, give the driver's address instead (WithDriverAddr or
// GODIST_MPI_DRIVER, e.g. "node1:9100", which rank 0 listens on) and the cookie in the
// environment of every rank (GODIST_COOKIE or GODIST_COOKIE_FILE; mpirun -x passes variables).
//
// Slurm's srun is a launcher too: `srun -n 8 ./prog` (inside or outside an allocation) forms
// the same cluster, rank being SLURM_PROCID and the launch named by the job and step ids.
//
// Other launchers work when they set the rank and size in the environment (PMI_RANK and
// PMI_SIZE, as MPICH's Hydra does, or PMIX_RANK with OMPI_COMM_WORLD_SIZE) and the job is
// named by GODIST_MPI_KEY (any string unique to the launch) or WithDriverAddr is used.
//
// # Limits
//
// The cluster is the launch: a rank that dies is gone (the cluster reports it exited) and is
// not restarted, and Start on rank 0 fails unless every rank joins in time (WithTimeout).
// Ranks other than 0 exit inside Start, so code after it, deferred calls included, runs on
// rank 0 only; use Serve to run code on them after they stop serving. MPI's own
// communication (MPI_Send, collectives) is not available: ranks talk through godist calls.
package mpi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/elastic"
)

// Environment variables the package reads; each is the default of the option of the same role.
const (
	// EnvDir is the rendezvous directory (WithDir).
	EnvDir = "GODIST_MPI_DIR"
	// EnvListen is the address rank 0 listens on for the other ranks (WithListen).
	EnvListen = "GODIST_MPI_LISTEN"
	// EnvDriver is the driver's address, known to every rank in advance (WithDriverAddr).
	EnvDriver = "GODIST_MPI_DRIVER"
	// EnvKey names the launch for launchers whose job id this package does not know.
	EnvKey = "GODIST_MPI_KEY"
)

// ErrNotLaunched is returned (errors.Is) when this process was not started by an MPI launcher
// this package recognises.
var ErrNotLaunched = errors.New("mpi: not started by mpirun or srun (no OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK or Slurm step task in the environment)")

// World is this process's place in the launch, as the launcher's environment tells it.
type World struct {
	Rank int // 0 is the driver
	Size int // number of ranks
	// LocalSize is the number of ranks on this host, 0 when the launcher does not say.
	LocalSize int
	// Key names the launch, "" when it is unknown (then WithDriverAddr is needed).
	Key string
}

// ThisWorld reads this process's rank, the world size and the launch's key from the
// environment; it returns ErrNotLaunched outside an MPI launch.
func ThisWorld() (World, error) {
	num := func(names ...string) (int, bool) {
		for _, n := range names {
			if v, err := strconv.Atoi(os.Getenv(n)); err == nil && v >= 0 {
				return v, true
			}
		}
		return 0, false
	}
	rankVars := []string{"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}
	sizeVars := []string{"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}
	// A task of an srun step (not a batch script, which has SLURM_PROCID but no step id).
	inStep := os.Getenv("SLURM_STEP_ID") != "" && os.Getenv("SLURM_JOB_ID") != ""
	if inStep {
		rankVars = append(rankVars, "SLURM_PROCID")
		sizeVars = append(sizeVars, "SLURM_STEP_NUM_TASKS")
	}
	rank, ok := num(rankVars...)
	if !ok {
		return World{}, ErrNotLaunched
	}
	size, ok := num(sizeVars...)
	if !ok || size < 1 || rank >= size {
		return World{}, fmt.Errorf("mpi: rank %d but no valid world size (%s)", rank, strings.Join(sizeVars, ", "))
	}
	w := World{Rank: rank, Size: size}
	w.LocalSize, _ = num("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")
	if w.LocalSize == 0 && inStep && os.Getenv("SLURM_STEP_NUM_NODES") == "1" {
		w.LocalSize = size
	}
	switch {
	case os.Getenv(EnvKey) != "":
		w.Key = os.Getenv(EnvKey)
	case os.Getenv("OMPI_MCA_ess_base_jobid") != "":
		// The job id alone repeats when mpirun's pid does; with mpirun's own address (the
		// same on every node, unlike the local daemons' and PMIx servers') it names one live
		// launch.
		h := sha256.Sum256([]byte(os.Getenv("OMPI_MCA_ess_base_jobid") + "|" + os.Getenv("OMPI_MCA_orte_hnp_uri")))
		w.Key = "ompi-" + os.Getenv("OMPI_MCA_ess_base_jobid") + "-" + hex.EncodeToString(h[:6])
	case inStep:
		// Job and step ids are unique within a Slurm cluster.
		w.Key = "slurm-" + os.Getenv("SLURM_CLUSTER_NAME") + "-" + os.Getenv("SLURM_JOB_ID") + "." + os.Getenv("SLURM_STEP_ID")
	}
	return w, nil
}

// Launched reports whether this process was started by an MPI launcher this package knows.
func Launched() bool {
	_, err := ThisWorld()
	return err == nil
}

// Option configures Start and Serve.
type Option func(*options)

type options struct {
	dir, listen, driver string
	timeout             time.Duration
	clusterOpts         []dist.Option
}

// WithDir sets the rendezvous directory; every rank must see the same one. It is created
// readable by its owner only, and must not be accessible to others if it exists.
func WithDir(dir string) Option { return func(o *options) { o.dir = dir } }

// WithListen sets where rank 0 listens for the other ranks: "host:port" (TCP; port 0 for any)
// or "unix:/path/to.sock". A TCP address on all interfaces (":0") is advertised with this
// host's name. Default: a unix socket in the rendezvous directory when all ranks share this
// host, else ":0".
func WithListen(addr string) Option { return func(o *options) { o.listen = addr } }

// WithDriverAddr gives the driver's address in advance: rank 0 listens on it and the others
// connect to it, with no rendezvous file. The cookie must then be in every rank's environment
// (GODIST_COOKIE or GODIST_COOKIE_FILE).
func WithDriverAddr(addr string) Option { return func(o *options) { o.driver = addr } }

// WithTimeout bounds how long rank 0 waits for every rank to join, and how long the other
// ranks wait for rank 0 (default one minute).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithClusterOptions passes options to rank 0's dist.Start (output, logger, message limits,
// cookie, ...). Start launches no local workers: the cluster is the ranks.
func WithClusterOptions(opts ...dist.Option) Option {
	return func(o *options) { o.clusterOpts = append(o.clusterOpts, opts...) }
}

func newOptions(opts []Option) options {
	o := options{
		dir:     os.Getenv(EnvDir),
		listen:  os.Getenv(EnvListen),
		driver:  os.Getenv(EnvDriver),
		timeout: time.Minute,
	}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// rendezvous is the file rank 0 writes for the others.
type rendezvous struct {
	Addr   string `json:"addr"`
	Cookie string `json:"cookie"`
}

// Start makes the MPI launch one cluster. On rank 0 it starts the driver, waits until every
// other rank has joined (their pids are 2..size in the order they joined; Ranks maps them)
// and returns the cluster. On every other rank it serves as a worker until the driver closes
// the cluster or is lost, and then exits the process (status 0 when told to exit, 1 on any
// error, which it prints): it never returns there. Call it right after dist.Main.
func Start(ctx context.Context, opts ...Option) (*dist.Cluster, error) {
	w, err := ThisWorld()
	if err != nil {
		return nil, err
	}
	if w.Rank != 0 {
		err := serve(ctx, w, newOptions(opts))
		if err != nil {
			fmt.Fprintf(os.Stderr, "godist mpi rank %d: %v\n", w.Rank, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	return startDriver(ctx, w, newOptions(opts))
}

// Serve makes this process, which must not be rank 0, a worker of rank 0's cluster and serves
// until the driver tells it to exit (nil), the driver is lost (an error wrapping
// dist.ErrDriverLost), ctx ends, or it cannot join in time. Start calls it on ranks other than
// 0; call it yourself to do something after serving instead of exiting.
func Serve(ctx context.Context, opts ...Option) error {
	w, err := ThisWorld()
	if err != nil {
		return err
	}
	if w.Rank == 0 {
		return errors.New("mpi: Serve called on rank 0, the driver")
	}
	return serve(ctx, w, newOptions(opts))
}

// allLocal reports whether every rank runs on this host.
func (w World) allLocal() bool { return w.LocalSize == w.Size }

// rendezvousDir returns the directory for the rendezvous file (and for unix sockets when all
// ranks are local), creating it private if needed.
func rendezvousDir(w World, o options) (string, error) {
	dir := o.dir
	if dir == "" {
		if w.allLocal() {
			dir = filepath.Join(os.TempDir(), fmt.Sprintf("godist-mpi-%d", os.Getuid()))
		} else {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("mpi: no rendezvous directory (set %s): %w", EnvDir, err)
			}
			dir = filepath.Join(home, ".godist", "mpi")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("mpi: rendezvous directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("mpi: rendezvous directory: %w", err)
	}
	// The file holds the cookie: nobody else may list, read or replace it.
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("mpi: rendezvous directory %s is accessible to others (mode %v); it holds the cluster cookie", dir, fi.Mode().Perm())
	}
	return dir, nil
}

func startDriver(ctx context.Context, w World, o options) (*dist.Cluster, error) {
	var dir string
	listen := o.listen
	if o.driver != "" {
		// The other ranks can only take the cookie from their environment: a cookie given
		// to rank 0 alone would leave them outside.
		if c, err := dist.CookieFromEnv(); err != nil || c == "" {
			return nil, fmt.Errorf("mpi: with the driver's address given (%s), every rank needs the cookie in %s or %s (mpirun -x)", o.driver, dist.EnvCookie, dist.EnvCookieFile)
		}
		listen = o.driver
	} else {
		if w.Key == "" {
			return nil, fmt.Errorf("mpi: the launch has no key to name its rendezvous file: set %s or %s", EnvKey, EnvDriver)
		}
		var err error
		if dir, err = rendezvousDir(w, o); err != nil {
			return nil, err
		}
	}
	if listen == "" {
		if w.allLocal() {
			listen = "unix:" + filepath.Join(dir, w.Key+".sock")
		} else {
			listen = ":0"
		}
	}
	c, err := dist.Start(ctx, append(o.clusterOpts, dist.WithWorkers(0))...)
	if err != nil {
		return nil, fmt.Errorf("mpi: rank 0: %w", err)
	}
	ln, err := elastic.Listen(ctx, c, listen, elastic.WithConnectTimeout(o.timeout))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("mpi: rank 0: %w", err)
	}
	// The listener is only for the launch's ranks: none come later. Closing it leaves the
	// ranks the cluster has counted in the cluster.
	defer ln.Close()
	fail := func(err error) (*dist.Cluster, error) {
		ln.Close()
		c.Close()
		return nil, err
	}
	if o.driver == "" {
		file := filepath.Join(dir, w.Key+".json")
		if err := writeRendezvous(file, rendezvous{Addr: advertised(ln.Addr()), Cookie: c.Cookie()}); err != nil {
			return fail(err)
		}
		defer os.Remove(file)
	}
	want := w.Size - 1
	deadline := time.NewTimer(o.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for c.NWorkers() < want {
		select {
		case <-tick.C:
		case <-deadline.C:
			return fail(fmt.Errorf("mpi: rank 0: %d of %d other ranks joined within %v (listening on %s)", c.NWorkers(), want, o.timeout, advertised(ln.Addr())))
		case <-ctx.Done():
			return fail(fmt.Errorf("mpi: rank 0: waiting for the other ranks: %w", ctx.Err()))
		}
	}
	// A unix socket's path is only for finding rank 0: once all have joined it goes, so that
	// none is left behind if this process exits before the listener's own cleanup has run.
	if path, ok := strings.CutPrefix(ln.Addr(), "unix:"); ok {
		os.Remove(path)
	}
	return c, nil
}

// advertised turns a listener address on all interfaces into one other hosts can dial.
func advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr // a unix socket
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if name, err := os.Hostname(); err == nil {
			return net.JoinHostPort(name, port)
		}
	}
	return addr
}

// writeRendezvous writes the file whole (a rank never reads half of it) and private.
func writeRendezvous(file string, r rendezvous) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("mpi: rendezvous file: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mpi: rendezvous file: %w", err)
	}
	return nil
}

func serve(ctx context.Context, w World, o options) error {
	deadline := time.Now().Add(o.timeout)
	var eopts []elastic.Option
	addr := o.driver
	if addr == "" {
		if w.Key == "" {
			return fmt.Errorf("mpi: rank %d: the launch has no key to find its rendezvous file: set %s or %s", w.Rank, EnvKey, EnvDriver)
		}
		dir, err := rendezvousDir(w, o)
		if err != nil {
			return err
		}
		r, err := awaitRendezvous(ctx, filepath.Join(dir, w.Key+".json"), deadline)
		if err != nil {
			return fmt.Errorf("mpi: rank %d: %w", w.Rank, err)
		}
		addr = r.Addr
		eopts = append(eopts, elastic.WithCookie(r.Cookie))
	}
	eopts = append(eopts, elastic.WithConnectTimeout(max(time.Until(deadline), time.Second)))
	return elastic.Serve(ctx, addr, eopts...)
}

// awaitRendezvous polls for rank 0's file until it exists or the deadline passes.
func awaitRendezvous(ctx context.Context, file string, deadline time.Time) (rendezvous, error) {
	for {
		b, err := os.ReadFile(file)
		if err == nil {
			var r rendezvous
			if err := json.Unmarshal(b, &r); err != nil || r.Addr == "" || r.Cookie == "" {
				return rendezvous{}, fmt.Errorf("bad rendezvous file %s", file)
			}
			return r, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return rendezvous{}, fmt.Errorf("rendezvous file: %w", err)
		}
		if time.Now().After(deadline) {
			return rendezvous{}, fmt.Errorf("rank 0 wrote no rendezvous file %s in time (is the directory shared by all hosts? set %s)", file, EnvDir)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return rendezvous{}, ctx.Err()
		}
	}
}

// rankFunc returns the rank of the process it runs on.
var rankFunc = dist.NewFunc("godist.mpi.rank", func(ctx context.Context, _ struct{}) (int, error) {
	w, err := ThisWorld()
	if err != nil {
		return 0, err
	}
	return w.Rank, nil
})

// Ranks returns the MPI rank of every process of c by pid (the driver, pid 1, is rank 0), asking
// each worker. Call it on rank 0. A process that is not a rank of the launch (a worker added
// later with AddProcs, say) has no rank: the error then names the first such pid (its
// message is ErrNotLaunched's) and the map holds the ranks of the others.
func Ranks(ctx context.Context, c *dist.Cluster) (map[int]int, error) {
	return rankFunc.Everywhere(ctx, c, struct{}{})
}
