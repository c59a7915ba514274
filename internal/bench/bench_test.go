package bench_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/bench"
	"github.com/godist/dist/internal/rawbench"
)

func TestMain(m *testing.M) {
	dist.Main()
	rawbench.ChildMain()
	os.Exit(m.Run())
}

// TestQuickRun checks that every published figure is produced, with a positive value and its
// baseline where one applies. The numbers themselves are asserted nowhere: see godist bench.
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	got := map[string]bench.Figure{}
	err := bench.Run(ctx, bench.Options{Quick: true}, func(f bench.Figure) { got[f.Name] = f })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"raw.unix.pingpong_p50_us":         "",
		"raw.tcp.pingpong_p50_us":          "",
		"raw.unix.bulk_mb_per_s":           "",
		"startup.4workers_ms":              "",
		"call.p50_us":                      "raw.unix.pingpong_p50_us",
		"call.p99_us":                      "raw.unix.pingpong_p50_us",
		"call.async_per_s":                 "",
		"raw.unix.array_mb_per_s":          "raw.unix.bulk_mb_per_s",
		"send.mb_per_s":                    "raw.unix.bulk_mb_per_s",
		"fetch.mb_per_s":                   "raw.unix.bulk_mb_per_s",
		"send.struct_mb_per_s":             "raw.unix.bulk_mb_per_s",
		"channel.roundtrip_us":             "",
		"worker.idle_rss_mib":              "",
		"pmap.overhead_us_per_item":        "",
		"pmap.overhead_us_per_item_batch1": "",
		"raw.threads_speedup":              "",
		"pmap.speedup":                     "raw.threads_speedup",
		"reduce.serial_sum_1e8_ms":         "",
		"reduce.sum_1e8_ms":                "reduce.serial_sum_1e8_ms",
	}
	for name, base := range want {
		f, ok := got[name]
		if !ok {
			t.Errorf("figure %s missing", name)
			continue
		}
		if f.Value <= 0 {
			t.Errorf("%s = %v", name, f.Value)
		}
		if f.Baseline != base {
			t.Errorf("%s baseline = %q, want %q", name, f.Baseline, base)
		}
		if base != "" && f.Ratio <= 0 {
			t.Errorf("%s ratio = %v", name, f.Ratio)
		}
	}
}

func TestPrefixesSelect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var names []string
	err := bench.Run(ctx, bench.Options{Quick: true, Prefixes: []string{"call.p"}}, func(f bench.Figure) { names = append(names, f.Name) })
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(names, ",")
	if joined != "raw.unix.pingpong_p50_us,call.p50_us,call.p99_us" {
		t.Fatalf("figures = %s", joined)
	}
}
