package wire

// Role names who reads the connection now: "background", "caller" or "free".
func (c *Conn) Role() string {
	return [...]string{roleBackground: "background", roleCaller: "caller", roleFree: "free"}[c.role.who()]
}

// PauseMonitor stops the monitor from taking over from slow handlers and from restarting
// readers on free connections, until the returned function is called.
func PauseMonitor() (restore func()) {
	processMonitor.paused.Store(true)
	return func() { processMonitor.paused.Store(false) }
}
