package pi_test

import (
	"context"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/examples/pi"
)

func TestMain(m *testing.M) {
	dist.Main()
	os.Exit(m.Run())
}

func TestRunEstimatesPi(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _ := disttest.Start(t, 2)
	var out strings.Builder
	if err := pi.Run(ctx, c, &out, []string{"-n", "4000000"}); err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out.String())
	if len(f) < 2 || f[0] != "π" {
		t.Fatalf("output %q", out.String())
	}
	v, err := strconv.ParseFloat(f[2], 64)
	if err != nil || math.Abs(v-math.Pi) > 0.01 {
		t.Fatalf("estimate %q (%v)", f[2], err)
	}
}
