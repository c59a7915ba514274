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
	data := s.Data()
	var b strings.Builder
	if data == nil && s.md.length > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), fetchForPrint)
		defer cancel()
		var err error
		data, err = s.Fetch(ctx)
		if err != nil {
			fmt.Fprintf(f, "%s: <contents unavailable: %v>", s.header(), err)
			return
		}
	}
	render(&b, s.header(), s.md.dims, func(i int) string { return fmt.Sprintf(spec, data[i]) })
	f.Write([]byte(b.String()))
}

// String prints the array like SharedArray.String; elements of a type this process has never
// used as a SharedArray element are shown as their bytes.
func (a *Array) String() string {
	if a == nil || a.md == nil {
		return "<nil Array>"
	}
	var b []byte
	if a.md.length > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), fetchForPrint)
		defer cancel()
		var err error
		if b, err = a.contents(ctx); err != nil {
			return fmt.Sprintf("%s: <contents unavailable: %v>", a.header(), err)
		}
	}
	es := a.md.elemSize
	elem := func(i int) string { return fmt.Sprintf("%x", b[i*es:(i+1)*es]) }
	if t, ok := types.Load(a.md.elem); ok && t.(reflect.Type).Size() == uintptr(es) && len(b) > 0 {
		t := t.(reflect.Type)
		base := unsafe.Pointer(unsafe.SliceData(b))
		elem = func(i int) string {
			return fmt.Sprint(reflect.NewAt(t, unsafe.Add(base, i*es)).Elem().Interface())
		}
	}
	var sb strings.Builder
	render(&sb, a.header(), a.md.dims, elem)
	return sb.String()
}
