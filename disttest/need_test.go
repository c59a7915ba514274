package disttest_test

import (
	"strings"
	"testing"

	"github.com/godist/dist/disttest"
)

// run calls f with a recorder (hosts_test.go) on a goroutine of its own, as Skipf and Fatalf
// end it.
func run(t *testing.T, f func(testing.TB)) *recorder {
	r := &recorder{TB: t, outcome: "ok"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestNeed(t *testing.T) {
	absent := disttest.Program("no-such-program-godist", "nothing: it does not exist")
	present := disttest.Program("go", "a Go toolchain")
	for _, tc := range []struct {
		ci   string
		c    disttest.Component
		want string
	}{
		{"", present, "ok"},
		{"true", present, "ok"},
		{"", absent, "skip"},
		{"false", absent, "skip"},
		{"true", absent, "fatal"},
	} {
		t.Run(tc.c.Name+"/CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := run(t, func(tb testing.TB) { disttest.Need(tb, tc.c) })
			if r.outcome != tc.want {
				t.Fatalf("Need ended the test with %q (%s), want %q", r.outcome, r.msg, tc.want)
			}
			if tc.want != "ok" && (!strings.Contains(r.msg, tc.c.Name) || !strings.Contains(r.msg, tc.c.Setup)) {
				t.Errorf("message %q does not say what is missing and how to set it up", r.msg)
			}
		})
	}
}
