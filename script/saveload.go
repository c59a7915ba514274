package script

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"

	"github.com/godist/dist"
)

// The Save file format, version 1:
//
//	offset 0: the 8 bytes 0x89 'G' 'O' 'D' 'I' 'S' 'T' '\n' (magic: the high byte and the
//	          newline catch transfers that mangle binary files, as PNG's signature does)
//	offset 8: one byte, the format version (1)
//	offset 9: one CBOR data item (RFC 8949), the whole rest of the file: a map with
//	          "kind": "value" and "value": a Value, or
//	          "kind": "vars" and "vars": a map from variable name to Value.
//
// A Value is CBOR tag 0x676f64 on a two-element array: the value's type in Go syntax (a text
// string such as "[]float64" or "map[string]any") and the value's CBOR encoding; see Value.
// A numeric slice's encoding is a byte string of its little-endian elements. Readers reject
// other magics, other versions, trailing bytes, and anything that does not decode into the type
// it names.
const fileVersion = 1

var fileMagic = []byte("\x89GODIST\n")

// ErrFormat is matched (errors.Is) by Load's error for a file that is not a Save file of a
// version this package reads, or is damaged.
var ErrFormat = errors.New("script: not a godist save file")

type saveFile struct {
	Kind  string           `cbor:"kind"`
	Value *Value           `cbor:"value,omitempty"`
	Vars  map[string]Value `cbor:"vars,omitempty"`
}

// Save writes v to the file path (ClusterUtils' save(file, value)); Load reads it back with its
// type. v must be able to cross processes (see Value). The file is replaced atomically.
func Save(path string, v any) error {
	w, err := encodeValue(reflect.ValueOf(v))
	if err != nil {
		return err
	}
	return writeFile(path, saveFile{Kind: "value", Value: &w})
}

// SaveVars writes a set of named values to the file path (ClusterUtils' save(file, :X, :R));
// Load returns them as a map[string]any.
func SaveVars(path string, vars map[string]any) error {
	f := saveFile{Kind: "vars", Vars: make(map[string]Value, len(vars))}
	for name, v := range vars {
		w, err := encodeValue(reflect.ValueOf(v))
		if err != nil {
			return fmt.Errorf("script: variable %s: %w", name, err)
		}
		f.Vars[name] = w
	}
	return writeFile(path, f)
}

// SaveNames writes the globals names of process pid's namespace to the file path on the
// caller, as SaveVars does: save("temp.jlf", :X, :R) is SaveNames(ctx, c, c.MyID(),
// "temp.jlf", "X", "R").
func SaveNames(ctx context.Context, c *dist.Cluster, pid int, path string, names ...string) error {
	vars := make(map[string]any, len(names))
	for _, n := range names {
		if err := checkName(n); err != nil {
			return err
		}
		v, err := EvalAt(ctx, c, pid, n)
		if err != nil {
			return err
		}
		vars[n] = v
	}
	return SaveVars(path, vars)
}

// Load reads a file written by Save (the value, with its type) or by SaveVars or SaveNames (a
// map[string]any). A file that is not a Save file, of another version, or damaged is an error
// matching ErrFormat.
func Load(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("script: load: %w", err)
	}
	v, err := decodeFile(data)
	if err != nil {
		return nil, fmt.Errorf("script: load %s: %w", path, err)
	}
	return v, nil
}

// LoadInto reads a file written by SaveVars or SaveNames and defines each of its variables in
// the namespaces of pids, as SowValue does.
func LoadInto(ctx context.Context, c *dist.Cluster, pids []int, path string) error {
	v, err := Load(path)
	if err != nil {
		return err
	}
	vars, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("script: %s holds one value, not named variables", path)
	}
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := SowValue(ctx, c, pids, n, vars[n]); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, f saveFile) error {
	body, err := valEnc.Marshal(f)
	if err != nil {
		return fmt.Errorf("script: save: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".save-*")
	if err != nil {
		return fmt.Errorf("script: save: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	buf := append(append(slices.Clip(fileMagic), fileVersion), body...)
	if _, err := tmp.Write(buf); err != nil {
		tmp.Close()
		return fmt.Errorf("script: save: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("script: save: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("script: save: %w", err)
	}
	return nil
}

// decodeFile decodes the contents of a Save file.
func decodeFile(data []byte) (any, error) {
	if len(data) < len(fileMagic)+1 || !bytes.Equal(data[:len(fileMagic)], fileMagic) {
		return nil, fmt.Errorf("%w (no godist signature)", ErrFormat)
	}
	if v := data[len(fileMagic)]; v != fileVersion {
		return nil, fmt.Errorf("%w: format version %d, this program reads %d", ErrFormat, v, fileVersion)
	}
	var f saveFile
	if err := valDec.Unmarshal(data[len(fileMagic)+1:], &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	switch f.Kind {
	case "value":
		if f.Value == nil || f.Vars != nil {
			return nil, fmt.Errorf("%w: a value file without exactly one value", ErrFormat)
		}
		v, err := decodeAny(*f.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFormat, err)
		}
		return v, nil
	case "vars":
		if f.Value != nil {
			return nil, fmt.Errorf("%w: a variables file with a single value", ErrFormat)
		}
		out := make(map[string]any, len(f.Vars))
		for name, w := range f.Vars {
			v, err := decodeAny(w)
			if err != nil {
				return nil, fmt.Errorf("%w: variable %s: %v", ErrFormat, name, err)
			}
			out[name] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown kind %q", ErrFormat, f.Kind)
}
