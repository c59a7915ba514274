package sweep_test

import (
	"bytes"
	"context"
	"math"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/examples/sweep"
)

func TestMain(m *testing.M) {
	dist.Main()
	os.Exit(m.Run())
}

// TestRun sweeps on two real workers and checks the physics: chaos begins near the
// Feigenbaum point, and the widest window of order is the period-3 window.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, _ := disttest.Start(t, 2)
	var out bytes.Buffer
	if err := sweep.Run(ctx, c, &out, []string{"-n", "1200", "-iters", "20000"}); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	num := func(re string) []float64 {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no match for %q in:\n%s", re, out.String())
		}
		var xs []float64
		for _, s := range m[1:] {
			x, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			xs = append(xs, x)
		}
		return xs
	}
	if onset := num(`chaos begins at r ≈ ([0-9.]+)`)[0]; math.Abs(onset-3.5699) > 0.01 {
		t.Errorf("chaos begins at %v, want about 3.5699", onset)
	}
	if w := num(`widest window of order inside the chaos: r ≈ ([0-9.]+) to ([0-9.]+)`); math.Abs(w[0]-3.8284) > 0.005 || w[1] < 3.84 || w[1] > 3.86 {
		t.Errorf("widest window %v, want the period-3 window from about 3.8284", w)
	}
	if got := num(`1200 points on ([0-9]+) workers`)[0]; got != 2 {
		t.Errorf("ran on %v workers", got)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	var out bytes.Buffer
	if err := sweep.Run(context.Background(), nil, &out, []string{"-from", "3", "-to", "2"}); err == nil {
		t.Fatal("an empty range was accepted")
	}
}

// The function is usable on its own: λ at r = 4 is ln 2, and negative in the period-2 regime.
func TestLyapunovLocally(t *testing.T) {
	ctx := context.Background()
	c, _ := disttest.Start(t, 0)
	l4, err := sweep.Lyapunov.Call(ctx, c, 1, sweep.Point{R: 4, Iters: 200_000})
	if err != nil || math.Abs(l4-math.Ln2) > 0.01 {
		t.Fatalf("λ(4) = %v, %v; want ln 2", l4, err)
	}
	l32, err := sweep.Lyapunov.Call(ctx, c, 1, sweep.Point{R: 3.2, Iters: 10_000})
	if err != nil || l32 >= 0 {
		t.Fatalf("λ(3.2) = %v, %v; want < 0", l32, err)
	}
}
