package dist

import (
	"context"
	"fmt"
	"time"
)

// RestartPolicy says how the driver replaces workers that crash or are lost (WithRestart):
// Dask's nanny, Ray's max_restarts. A worker asked to exit (RmProcs, Close) is never
// replaced.
type RestartPolicy struct {
	// Max is how many times one worker, and then its replacements, may be replaced; 0 means
	// never (the zero policy replaces nothing).
	Max int
	// Backoff is the wait before the second replacement of a worker; it doubles for each one
	// after, up to a minute. The first replacement starts at once. 0 means one second.
	Backoff time.Duration
}

// WithRestart makes the driver replace workers launched by AddProcs (and Start) that crash or
// whose connection is lost, with the same manager and settings, by new workers with new pids:
// subscribers see the old one's Exited, a Restarting event, then the new one's Joined with
// Event.Replaces set. The default pool, and so Pmap, Reduce/For and task queues, take the
// replacement as they take any joining worker. Workers joined by AddProcess have no manager
// to ask and are not replaced. A replacement that cannot be launched counts as a replacement;
// the driver logs each failure and gives up after policy.Max.
func WithRestart(policy RestartPolicy) Option { return func(c *config) { c.restart = policy } }

// maxBackoff bounds the wait between replacements of one worker.
const maxBackoff = time.Minute

// lineage is a worker slot: how its workers are launched, and how many replacements it has
// had. The replacements of a worker share its lineage.
type lineage struct {
	m         Manager
	spec      LaunchSpec
	policy    RestartPolicy
	restarts  int // guarded by the launching goroutine's ownership: one replacement at a time
	replacing int // the pid the worker being launched replaces
}

// replace (driver) launches a replacement for worker p, which crashed or was lost, if its
// lineage allows one more.
func (c *Cluster) replace(p *peer) {
	p.mu.Lock()
	l, exiting, pid := p.lineage, p.exiting, p.info.Pid
	p.lineage = nil // one replacement per worker, however its end was reported
	p.mu.Unlock()
	if l == nil || exiting || l.restarts >= l.policy.Max {
		if l != nil && !exiting && l.policy.Max > 0 {
			c.log.Warn("worker not replaced: its replacements are used up", "pid", pid, "max", l.policy.Max)
		}
		return
	}
	if !c.bg.add() {
		return // closing
	}
	go func() {
		defer c.bg.done()
		for l.restarts < l.policy.Max {
			delay := l.backoff()
			l.restarts++
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-c.ctx.Done():
					t.Stop()
					return
				}
			}
			c.publish(Event{Kind: Restarting, Pid: pid, Replaces: pid, Count: 1})
			err := c.launchReplacement(l, pid)
			if err == nil || c.ctx.Err() != nil {
				return
			}
			c.log.Error("replacing a worker failed", "pid", pid, "attempt", l.restarts, "of", l.policy.Max, "err", err)
		}
	}()
}

// backoff returns the wait before the lineage's next replacement.
func (l *lineage) backoff() time.Duration {
	if l.restarts == 0 {
		return 0
	}
	d := l.policy.Backoff
	if d <= 0 {
		d = time.Second
	}
	for range l.restarts - 1 {
		if d *= 2; d >= maxBackoff {
			return maxBackoff
		}
	}
	return d
}

// launchReplacement launches and joins one worker of lineage l in place of pid.
func (c *Cluster) launchReplacement(l *lineage, pid int) error {
	ctx, cancel := context.WithTimeout(c.ctx, l.spec.Timeout+5*time.Second)
	defer cancel()
	spec := l.spec
	spec.Count = 1
	procs, err := l.m.Launch(ctx, spec)
	if err != nil {
		for _, p := range procs {
			killAndReap(p)
		}
		c.publish(Event{Kind: Exited, Reason: ExitNotStarted, Cause: err, Count: 1})
		return fmt.Errorf("dist: launching a replacement for worker %d: %w", pid, err)
	}
	next := &lineage{m: l.m, spec: l.spec, policy: l.policy, restarts: l.restarts, replacing: pid}
	for _, p := range procs {
		if _, err := c.join(ctx, p, next); err != nil {
			killAndReap(p)
			p.SetPid(0)
			c.publish(Event{Kind: Exited, Reason: ExitNotStarted, Cause: err, Count: 1})
			return fmt.Errorf("dist: joining a replacement for worker %d: %w", pid, err)
		}
	}
	return nil
}
