package shm

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// How long printing waits for the contents of an array that lives on another host.
const fetchForPrint = 10 * time.Second

// Display limits: bigger arrays show their corners, as Julia's display does.
const (
	maxRows = 20
	maxCols = 12
)

// header is the first line of a printed array: shape, type, participants and host.
func (a *Array) header() string {
	var b strings.Builder
	if len(a.md.dims) == 1 {
		fmt.Fprintf(&b, "%d-element", a.md.dims[0])
	} else {
		for i, d := range a.md.dims {
			if i > 0 {
				b.WriteString("×")
			}
			b.WriteString(strconv.Itoa(d))
		}
	}
	fmt.Fprintf(&b, " SharedArray[%s] on %s, pids %v", a.md.elem, a.md.host, a.md.pids)
	if a.md.file != "" {
		fmt.Fprintf(&b, ", file %s", a.md.file)
	}
	return b.String()
}

// render writes the header and the elements (elem formats one by linear index), Julia-like:
// a column for a vector, a right-aligned matrix, and [:, :, k…] slices beyond two dimensions.
func render(b *strings.Builder, header string, dims []int, elem func(int) string) {
	b.WriteString(header)
	b.WriteString(":")
	n := 1
	for _, d := range dims {
		n *= d
	}
	if n == 0 || len(dims) == 0 {
		return
	}
	rows, cols := dims[0], 1
	if len(dims) > 1 {
		cols = dims[1]
	}
	page := rows * cols
	for _, p := range shown(n/page, 6) {
		if p < 0 {
			b.WriteString("\n\n⋮")
			continue
		}
		if len(dims) > 2 {
			b.WriteString("\n\n[:, :")
			rest := p
			for _, d := range dims[2:] {
				fmt.Fprintf(b, ", %d", rest%d)
				rest /= d
			}
			b.WriteString("] =")
		}
		matrix(b, rows, cols, func(i, j int) string { return elem(p*page + j*rows + i) })
	}
}

// shown returns the indices to display of n: all, or the first and last half of max with -1
// standing for the elided middle.
func shown(n, limit int) []int {
	var out []int
	if n <= limit {
		for i := range n {
			out = append(out, i)
		}
		return out
	}
	for i := range limit / 2 {
		out = append(out, i)
	}
	out = append(out, -1)
	for i := n - limit/2; i < n; i++ {
		out = append(out, i)
	}
	return out
}

func matrix(b *strings.Builder, rows, cols int, elem func(i, j int) string) {
	ri, ci := shown(rows, maxRows), shown(cols, maxCols)
	cells := make([][]string, len(ri))
	width := make([]int, len(ci))
	for r, i := range ri {
		cells[r] = make([]string, len(ci))
		for k, j := range ci {
			var s string
			switch {
			case i < 0 && j < 0:
				s = "⋱"
			case i < 0:
				s = "⋮"
			case j < 0:
				s = "…"
			default:
				s = elem(i, j)
			}
			cells[r][k] = s
			width[k] = max(width[k], len([]rune(s)))
		}
	}
	for _, row := range cells {
		b.WriteString("\n")
		for k, s := range row {
			b.WriteString("  ")
			b.WriteString(strings.Repeat(" ", width[k]-len([]rune(s))))
			b.WriteString(s)
		}
	}
}

// String prints the array: its header and elements. Where the array is not Local the elements
// are fetched from its host; if that fails the error is printed in their place.
func (s *SharedArray[T]) String() string { return fmt.Sprint(s) }

// Format implements fmt.Formatter: %v and %s print as String does; other verbs (%d, %.3f, %x…)
// apply to each element.
func (s *SharedArray[T]) Format(f fmt.State, verb rune) {
	if s == nil || s.Array == nil {
		fmt.Fprint(f, "<nil SharedArray>")
		return
	}
	spec := "%v"
	if verb != 'v' && verb != 's' {
		spec = fmt.FormatString(f, verb)
	}
	var b strings.Builder
	if data := s.Data(); data != nil || s.md.length == 0 {
		render(&b, s.header(), s.md.dims, func(i int) string { return fmt.Sprintf(spec, data[i]) })
		f.Write([]byte(b.String()))
		return
	}
	get, err := s.shown()
	if err != nil {
		fmt.Fprintf(f, "%s: <contents unavailable: %v>", s.header(), err)
		return
	}
	render(&b, s.header(), s.md.dims, func(i int) string {
		var v T
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), s.md.elemSize), get(i))
		return fmt.Sprintf(spec, v)
	})
	f.Write([]byte(b.String()))
}

// String prints the array like SharedArray.String; elements of a type this process has never
// used as a SharedArray element are shown as their bytes.
func (a *Array) String() string {
	if a == nil || a.md == nil {
		return "<nil Array>"
	}
	get := func(int) []byte { return nil }
	if a.md.length > 0 {
		var err error
		if get, err = a.shown(); err != nil {
			return fmt.Sprintf("%s: <contents unavailable: %v>", a.header(), err)
		}
	}
	es := a.md.elemSize
	elem := func(i int) string { return fmt.Sprintf("%x", get(i)) }
	if t, err := a.elemType(); err == nil {
		elem = func(i int) string {
			p := reflect.New(t)
			copy(unsafe.Slice((*byte)(p.UnsafePointer()), es), get(i))
			return fmt.Sprint(p.Elem().Interface())
		}
	}
	var sb strings.Builder
	render(&sb, a.header(), a.md.dims, elem)
	return sb.String()
}

// shown gets the bytes of the elements a print shows (every element of a small array, the
// corners of a big one): from this process's mapping, or fetched from the array's host in one
// call. The returned function gives the bytes of element i.
func (a *Array) shown() (func(i int) []byte, error) {
	var idx []int
	render(new(strings.Builder), "", a.md.dims, func(i int) string { idx = append(idx, i); return "" })
	if len(idx) == a.md.length {
		idx = nil // everything: no list to send
	}
	ctx, cancel := context.WithTimeout(context.Background(), fetchForPrint)
	defer cancel()
	b, err := a.contents(ctx, idx)
	if err != nil {
		return nil, err
	}
	es := a.md.elemSize
	if idx == nil {
		return func(i int) []byte { return b[i*es : (i+1)*es] }, nil
	}
	at := make(map[int]int, len(idx))
	for k, i := range idx {
		at[i] = k
	}
	return func(i int) []byte { k := at[i]; return b[k*es : (k+1)*es] }, nil
}
