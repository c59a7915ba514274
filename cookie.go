package dist

import (
	"fmt"
	"os"
	"strings"
)

// EnvCookieFile, when set and EnvCookie is not, names a file whose content (surrounding
// white space removed) is the cluster cookie: a secret mounted into a container, say, rather
// than one visible in the environment.
const EnvCookieFile = "GODIST_COOKIE_FILE"

// CookieFromEnv returns the cookie this process's environment gives: EnvCookie if set, else
// the content of the file EnvCookieFile names, else "" (no cookie given). A cookie file that
// cannot be read, or is empty, is an error: a worker must not silently fall back to another
// cookie.
func CookieFromEnv() (string, error) {
	if c := os.Getenv(EnvCookie); c != "" {
		return c, nil
	}
	if path := os.Getenv(EnvCookieFile); path != "" {
		return ReadCookieFile(path)
	}
	return "", nil
}

// ReadCookieFile reads a cookie from a file; surrounding white space (a trailing newline) is
// not part of it. An empty file is an error.
func ReadCookieFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("dist: cookie file: %w", err)
	}
	c := strings.TrimSpace(string(b))
	if c == "" {
		return "", fmt.Errorf("dist: cookie file %s is empty", path)
	}
	return c, nil
}

// WithCookieFile sets the cluster cookie to the content of a file (see ReadCookieFile). Start
// fails if the file cannot be read.
func WithCookieFile(path string) Option {
	return func(c *config) { c.cookieFile = path }
}
