package main

import (
	"cmp"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
)

// maxShown is how many elements of a slice, or entries of a map, are printed before the rest
// is elided (the REPL shows values to read, not to copy).
const maxShown = 20

// display writes v the way Julia's REPL shows values: scalars on one line, a slice as its
// length and type followed by one element per line, a slice of slices as a matrix, and a map
// as its entries sorted by key, "k => v" per line. Results by pid are such maps.
func display(w io.Writer, v any) {
	if v == nil {
		fmt.Fprintln(w, "nil")
		return
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			fmt.Fprintf(w, "%d-byte %s: %q\n", rv.Len(), typeName(rv.Type()), ellipsis(fmt.Sprintf("%s", v), 200))
			return
		}
		if isMatrix(rv) {
			displayMatrix(w, rv)
			return
		}
		fmt.Fprintf(w, "%d-element %s:\n", rv.Len(), typeName(rv.Type()))
		n := rv.Len()
		for i := range n {
			if n > maxShown && i == maxShown-3 {
				fmt.Fprintln(w, " ⋮")
				i = n - 3
				for ; i < n; i++ {
					fmt.Fprintf(w, " %s\n", inline(rv.Index(i)))
				}
				return
			}
			fmt.Fprintf(w, " %s\n", inline(rv.Index(i)))
		}
	case reflect.Map:
		keys := rv.MapKeys()
		slices.SortFunc(keys, compareValues)
		entries := "entries"
		if len(keys) == 1 {
			entries = "entry"
		}
		fmt.Fprintf(w, "%s with %d %s:\n", typeName(rv.Type()), len(keys), entries)
		for i, k := range keys {
			if i == maxShown {
				fmt.Fprintf(w, "  ⋮ (%d more)\n", len(keys)-maxShown)
				break
			}
			fmt.Fprintf(w, "  %s => %s\n", inline(k), inline(rv.MapIndex(k)))
		}
	default:
		fmt.Fprintln(w, scalar(rv))
	}
}

// isMatrix reports whether rv is a non-empty slice of equally long numeric or string slices.
func isMatrix(rv reflect.Value) bool {
	if rv.Len() == 0 {
		return false
	}
	et := rv.Type().Elem()
	if et.Kind() == reflect.Interface {
		return false
	}
	if et.Kind() != reflect.Slice && et.Kind() != reflect.Array {
		return false
	}
	switch et.Elem().Kind() {
	case reflect.Slice, reflect.Array, reflect.Map, reflect.Struct, reflect.Interface, reflect.Pointer:
		return false
	}
	cols := rv.Index(0).Len()
	for i := range rv.Len() {
		if rv.Index(i).Len() != cols {
			return false
		}
	}
	return cols > 0
}

// displayMatrix prints rows×cols then the rows with aligned columns, as Julia prints arrays.
func displayMatrix(w io.Writer, rv reflect.Value) {
	rows, cols := rv.Len(), rv.Index(0).Len()
	fmt.Fprintf(w, "%d×%d %s:\n", rows, cols, typeName(rv.Type()))
	cells := make([][]string, 0, rows)
	width := make([]int, cols)
	for i := range min(rows, maxShown) {
		row := make([]string, cols)
		for j := range cols {
			row[j] = inline(rv.Index(i).Index(j))
			width[j] = max(width[j], len(row[j]))
		}
		cells = append(cells, row)
	}
	for _, row := range cells {
		var b strings.Builder
		for j, c := range row {
			fmt.Fprintf(&b, " %*s", width[j], c)
		}
		fmt.Fprintln(w, b.String())
	}
	if rows > maxShown {
		fmt.Fprintf(w, " ⋮ (%d more rows)\n", rows-maxShown)
	}
}

// scalar formats a value shown alone on its line: strings quoted, floats in full (Go's
// shortest form that reads back exactly), containers as inline does.
func scalar(v reflect.Value) string {
	v = deref(v)
	if v.IsValid() && v.CanFloat() {
		return fmt.Sprint(v.Float())
	}
	return inline(v)
}

// inline formats a value that is an element of another one, on one line: floats to 6
// significant digits, as Julia shows them inside arrays, containers with at most maxInline
// elements.
func inline(v reflect.Value) string {
	var b strings.Builder
	writeInline(&b, v, 0)
	return ellipsis(b.String(), 300)
}

const maxInline = 12

func writeInline(b *strings.Builder, v reflect.Value, depth int) {
	v = deref(v)
	switch {
	case !v.IsValid() || (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) && v.IsNil():
		b.WriteString("nil")
		return
	case depth > 8 || !v.CanInterface():
		b.WriteString("…")
		return
	}
	switch v.Kind() {
	case reflect.String:
		fmt.Fprintf(b, "%q", v.String())
	case reflect.Float32, reflect.Float64:
		fmt.Fprintf(b, "%.6g", v.Float())
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			fmt.Fprintf(b, "%q", v.Bytes())
			return
		}
		b.WriteByte('[')
		for i := range v.Len() {
			if i > 0 {
				b.WriteByte(' ')
			}
			if i == maxInline {
				fmt.Fprintf(b, "… (%d more)", v.Len()-maxInline)
				break
			}
			writeInline(b, v.Index(i), depth+1)
		}
		b.WriteByte(']')
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, compareValues)
		b.WriteString("map[")
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(' ')
			}
			if i == maxInline {
				fmt.Fprintf(b, "… (%d more)", len(keys)-maxInline)
				break
			}
			writeInline(b, k, depth+1)
			b.WriteByte(':')
			writeInline(b, v.MapIndex(k), depth+1)
		}
		b.WriteByte(']')
	case reflect.Struct:
		b.WriteByte('{')
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				continue
			}
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(v.Type().Field(i).Name + ":")
			writeInline(b, v.Field(i), depth+1)
		}
		b.WriteByte('}')
	default:
		fmt.Fprintf(b, "%v", v.Interface())
	}
}

// deref looks through interfaces to the value they hold.
func deref(v reflect.Value) reflect.Value {
	for v.IsValid() && v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	return v
}

func ellipsis(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// compareValues orders map keys: numbers by value, strings lexically, otherwise by their
// printed form, so that results by pid come out in pid order.
func compareValues(a, b reflect.Value) int {
	for a.Kind() == reflect.Interface && !a.IsNil() {
		a = a.Elem()
	}
	for b.Kind() == reflect.Interface && !b.IsNil() {
		b = b.Elem()
	}
	if fa, ok := number(a); ok {
		if fb, ok := number(b); ok {
			return cmp.Compare(fa, fb)
		}
	}
	if a.Kind() == reflect.String && b.Kind() == reflect.String {
		return strings.Compare(a.String(), b.String())
	}
	return strings.Compare(inline(a), inline(b))
}

func number(v reflect.Value) (float64, bool) {
	switch {
	case v.CanInt():
		return float64(v.Int()), true
	case v.CanUint():
		return float64(v.Uint()), true
	case v.CanFloat():
		return v.Float(), true
	}
	return 0, false
}

// typeName spells interface{} as any, as Go code is written today.
func typeName(t reflect.Type) string { return strings.ReplaceAll(t.String(), "interface {}", "any") }
