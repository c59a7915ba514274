package slurm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// allocReady starts the one line the allocation holder prints once Slurm granted the job.
const allocReady = "godist-allocation"

// holderScript runs under salloc on this host once the allocation is granted: it tells us the
// job and its layout, then holds the allocation for as long as our pipe to it stays open.
// salloc releases the allocation when it ends, so the allocation lives exactly as long as the
// pipe: Close, or the death of this process, ends it.
const holderScript = `printf '` + allocReady + ` %s %s %s\n' "$SLURM_JOB_ID" "$SLURM_JOB_NODELIST" "${SLURM_TASKS_PER_NODE:-$SLURM_JOB_CPUS_PER_NODE}"; exec cat >/dev/null`

// allocation is one salloc this manager runs.
type allocation struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	slots slots
	done  chan struct{} // salloc has exited
	err   error         // its exit status, once done

	mu      sync.Mutex
	stderr  []string    // salloc's messages, for errors
	revoked bool        // Slurm ended the job (scancel, time limit)
	reaper  *time.Timer // kills a salloc that outlives its revoked job
}

// gone reports whether the allocation has ended or been revoked.
func (a *allocation) gone() bool {
	select {
	case <-a.done:
		return true
	default:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.revoked
}

func (a *allocation) said() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.stderr, " | ")
}

// allocate requests an allocation for count workers and returns once Slurm granted it.
func (m *Manager) allocate(ctx context.Context, count int) (*allocation, error) {
	args := []string{"--ntasks=" + strconv.Itoa(count), "--job-name=" + m.o.jobName}
	if m.o.nodes > 0 {
		args = append(args, "--nodes="+strconv.Itoa(m.o.nodes))
	}
	if m.o.cpusPerTask > 0 {
		args = append(args, "--cpus-per-task="+strconv.Itoa(m.o.cpusPerTask))
	}
	if m.o.partition != "" {
		args = append(args, "--partition="+m.o.partition)
	}
	if m.o.timeLimit > 0 {
		mins := int((m.o.timeLimit + time.Minute - 1) / time.Minute)
		args = append(args, "--time="+strconv.Itoa(mins))
	}
	args = append(args, m.o.allocArgs...)
	args = append(args, "/bin/sh", "-c", holderScript)
	cmd := exec.Command("salloc", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a terminal's ^C is the driver's
	cmd.WaitDelay = 2 * time.Second
	a := &allocation{cmd: cmd, done: make(chan struct{})}
	var err error
	if a.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("slurm: requesting an allocation: %w", err)
	}
	ready := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), allocReady+" ") {
				ready <- sc.Text()
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			// scancel or the time limit: salloc says so but waits for its command, which
			// waits for our pipe.
			if strings.Contains(sc.Text(), "has been revoked") {
				a.onRevoked()
			}
			a.mu.Lock()
			a.stderr = append(a.stderr, sc.Text())
			if len(a.stderr) > 8 {
				a.stderr = a.stderr[1:]
			}
			a.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
	}()
	// Ends when salloc does, which release and the end of this process both bring about.
	go func() {
		wg.Wait()
		a.err = cmd.Wait()
		close(a.done)
	}()

	var line string
	select {
	case line = <-ready:
	case <-a.done:
		return nil, fmt.Errorf("slurm: salloc %s: %v: %s", strings.Join(args[:len(args)-3], " "), a.err, a.said())
	case <-ctx.Done():
		// Still pending: salloc withdraws the request when it is told to stop.
		a.cmd.Process.Signal(syscall.SIGTERM)
		a.release()
		return nil, fmt.Errorf("slurm: waiting for an allocation of %d tasks: %w (salloc said: %s)", count, ctx.Err(), a.said())
	}
	f := strings.Fields(line)
	if len(f) != 4 {
		a.release()
		return nil, fmt.Errorf("slurm: unexpected line from the allocation: %q", line)
	}
	nodes, err := expandHosts(ctx, f[2])
	if err == nil {
		a.slots, err = makeSlots(f[1], nodes, f[3])
	}
	if err != nil {
		a.release()
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		a.release()
		return nil, errors.New("slurm: manager closed")
	}
	m.allocs = append(m.allocs, a)
	m.mu.Unlock()
	return a, nil
}

// onRevoked ends the holder of a job Slurm ended. salloc waits for its command, so the pipe
// is closed; and since salloc 22.05 sometimes spins at 100% CPU instead of exiting when its
// command ends around the revocation (seen here about one time in ten, deaf to SIGTERM), a
// salloc still there a few seconds later is killed: there is nothing left for it to release.
func (a *allocation) onRevoked() {
	a.stdin.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.revoked {
		return
	}
	a.revoked = true
	a.reaper = time.AfterFunc(3*time.Second, func() {
		select {
		case <-a.done:
		default:
			syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		}
	})
}

// release ends the allocation: closing the holder's pipe ends its command, after which salloc
// relinquishes the job. If salloc is stuck, the job is cancelled and salloc killed.
func (a *allocation) release() error {
	a.stdin.Close()
	select {
	case <-a.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	if a.gone() {
		// Revoked: the reaper kills salloc if it hangs; nothing is held any more.
		<-a.done
		return nil
	}
	if a.slots.job != "" {
		run(context.Background(), "scancel", a.slots.job)
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	<-a.done
	return fmt.Errorf("slurm: job %s: salloc did not release the allocation; killed (it said: %s)", a.slots.job, a.said())
}
