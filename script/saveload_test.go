package script_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

// TestReadmeSaveLoad is the README's storing and recovering section: one value, then a set of
// named variables of the namespace.
func TestReadmeSaveLoad(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "temp.gds")

	// save("temp.jlf", randn(5)); load("temp.jlf")
	v := []float64{-1.41679, -1.2292, 0.103825, 0.0804196, 1.4737}
	if err := script.Save(path, v); err != nil {
		t.Fatal(err)
	}
	got, err := script.Load(path)
	if err != nil || !reflect.DeepEqual(got, v) {
		t.Fatalf("load = %#v, %v", got, err)
	}

	// R = [1,2,3]; X = "Fnordic"; save("temp.jlf", :X, :R); load("temp.jlf")
	if _, err := script.Eval(ctx, c, []int{1}, "R := []int{1, 2, 3}\nX := \"Fnordic\""); err != nil {
		t.Fatal(err)
	}
	if err := script.SaveNames(ctx, c, c.MyID(), path, "X", "R"); err != nil {
		t.Fatal(err)
	}
	got, err = script.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"R": []int{1, 2, 3}, "X": "Fnordic"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("load = %#v, want %#v", got, want)
	}
	// The same variables defined on a worker.
	if err := script.LoadInto(ctx, c, []int{2}, path); err != nil {
		t.Fatal(err)
	}
	if x, err := script.EvalAt(ctx, c, 2, "X + fmt.Sprint(R)"); err != nil || x != "Fnordic[1 2 3]" {
		t.Fatalf("on worker: %v, %v", x, err)
	}

	// Structured values keep their types.
	type rec struct {
		Name  string
		Dims  []int
		Attrs map[string]any
	}
	r := rec{Name: "grid", Dims: []int{4, 4}, Attrs: map[string]any{"dx": 0.5, "tags": []string{"a"}, "n": 3}}
	if err := script.Save(path, r); err != nil {
		t.Fatal(err)
	}
	got, err = script.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	gv := reflect.ValueOf(got)
	if gv.Kind() != reflect.Struct || gv.FieldByName("Name").Interface() != "grid" ||
		!reflect.DeepEqual(gv.FieldByName("Dims").Interface(), []int{4, 4}) ||
		!reflect.DeepEqual(gv.FieldByName("Attrs").Interface(), r.Attrs) {
		t.Fatalf("struct round trip: %#v", got)
	}
}

func TestLoadRejectsForeignAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := script.Save(good, map[string][]float64{"a": {1, 2}}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"empty":     nil,
		"text":      []byte("hello, world\n"),
		"gob-ish":   []byte{0x0e, 0xff, 0x81, 0x03, 0x01, 0x01},
		"version 9": append(append([]byte{}, data[:8]...), append([]byte{9}, data[9:]...)...),
		"truncated": data[:len(data)-3],
		"trailing":  append(append([]byte{}, data...), 0),
		"bad type":  replace(data, "float64", "floaty4"),
	}
	for name, b := range bad {
		p := filepath.Join(dir, "bad")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := script.Load(p)
		if !errors.Is(err, script.ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := script.Load(filepath.Join(dir, "missing")); err == nil || errors.Is(err, script.ErrFormat) {
		t.Errorf("missing file: %v", err)
	}
	if err := script.Save(filepath.Join(dir, "f"), func() {}); !errors.Is(err, script.ErrNotWireable) {
		t.Errorf("saving a func: %v", err)
	}
}

func replace(b []byte, old, new string) []byte {
	out := append([]byte{}, b...)
	for i := 0; i+len(old) <= len(out); i++ {
		if string(out[i:i+len(old)]) == old {
			copy(out[i:], new)
		}
	}
	return out
}
