package script

import (
	"encoding/binary"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/fxamacker/cbor/v2"
)

// ErrNotWireable is matched (errors.Is) by the error for a value that cannot leave its process:
// see Value for what can.
var ErrNotWireable = errors.New("script: value cannot cross processes")

// A Value is how a value of a namespace travels between processes and in Save files: the Go
// syntax of its type (T) and its CBOR encoding (V). The receiver rebuilds the type, so a
// [][]float64 stays a [][]float64 and an int stays an int, whether the type was compiled or
// defined by interpreted code.
//
// What can cross: booleans, integers, floats, strings, time.Time, and slices, arrays, maps,
// pointers and structs (their exported fields) made of those, to any depth; interface values
// (any) holding any of these, which keep their dynamic type too. What cannot: functions,
// channels, complex numbers, unsafe pointers, embedded struct fields, recursive types, and a
// map keyed by an interface whose keys are not plain numbers, strings or booleans. Named types
// arrive as their underlying structure (a time.Duration as an int64), and methods do not
// travel: only data does. The interpreter gives an unexported field f of a struct type defined
// by interpreted code the exported name Xf, under which it travels. A numeric slice ([]float64, []int32, []byte, …) travels as its raw
// little-endian bytes.
type Value struct {
	_ struct{}        `cbor:",toarray"`
	T string          // the type, in Go syntax: "[]float64", "map[string]any", "struct { A int }"
	V cbor.RawMessage // the CBOR encoding; raw little-endian bytes (a byte string) for numeric slices

	tail bool   // the bytes are not in V but in raw: the tail of a packed message (see pack)
	raw  []byte // that tail
}

const valueTag = 0x676f64 // "god": marks a Value nested in an interface slot

var (
	valEnc   cbor.EncMode
	valDec   cbor.DecMode
	timeType = reflect.TypeOf(time.Time{})
	anyType  = reflect.TypeOf((*any)(nil)).Elem()
)

func init() {
	tags := cbor.NewTagSet()
	if err := tags.Add(cbor.TagOptions{EncTag: cbor.EncTagRequired, DecTag: cbor.DecTagRequired}, reflect.TypeOf(Value{}), valueTag); err != nil {
		panic(err) // static: any test catches it
	}
	var err error
	valEnc, err = cbor.EncOptions{Time: cbor.TimeRFC3339Nano, Sort: cbor.SortBytewiseLexical}.EncModeWithTags(tags)
	if err != nil {
		panic(err)
	}
	// The same hardened limits as the wire codec: counts are checked before allocation.
	valDec, err = cbor.DecOptions{
		MaxNestedLevels:  64,
		MaxArrayElements: 4 << 20,
		MaxMapPairs:      4 << 20,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
	}.DecModeWithTags(tags)
	if err != nil {
		panic(err)
	}
}

// encodeValue describes v for the wire. An invalid v (no value) encodes as a nil any.
func encodeValue(v reflect.Value) (Value, error) {
	if !v.IsValid() {
		return Value{T: "any", V: cbor.RawMessage{0xf6}}, nil
	}
	t := v.Type()
	desc, err := typeDesc(t, 0)
	if err != nil {
		return Value{}, err
	}
	if isNumericSlice(t) {
		if !littleEndian {
			return Value{}, fmt.Errorf("%w: numeric slices on a big-endian host", ErrNotWireable)
		}
		n := v.Len() * int(t.Elem().Size())
		var raw []byte
		if n > 0 {
			raw = unsafe.Slice((*byte)(v.UnsafePointer()), n)
		}
		b, err := valEnc.Marshal(raw)
		if err != nil {
			return Value{}, err
		}
		return Value{T: desc, V: b}, nil
	}
	low, err := lower(v, 0)
	if err != nil {
		return Value{}, err
	}
	var x any
	if low.IsValid() && low.CanInterface() {
		x = low.Interface()
	}
	b, err := valEnc.Marshal(x)
	if err != nil {
		return Value{}, fmt.Errorf("%w: %s: %v", ErrNotWireable, desc, err)
	}
	return Value{T: desc, V: b}, nil
}

// decodeValue rebuilds the value w describes.
func decodeValue(w Value) (reflect.Value, error) {
	t, err := buildType(w.T)
	if err != nil {
		return reflect.Value{}, err
	}
	if w.tail {
		if !isNumericSlice(t) {
			return reflect.Value{}, fmt.Errorf("script: a raw tail for %s", w.T)
		}
		return sliceFromRaw(t, w.raw)
	}
	if isNumericSlice(t) {
		var raw []byte
		if err := valDec.Unmarshal(w.V, &raw); err != nil {
			return reflect.Value{}, fmt.Errorf("script: decoding %s: %w", w.T, err)
		}
		size := int(t.Elem().Size())
		if len(raw)%size != 0 {
			return reflect.Value{}, fmt.Errorf("script: decoding %s: %d bytes is not a whole number of elements", w.T, len(raw))
		}
		s := reflect.MakeSlice(t, len(raw)/size, len(raw)/size)
		if len(raw) > 0 {
			copy(unsafe.Slice((*byte)(s.UnsafePointer()), len(raw)), raw)
		}
		return s, nil
	}
	p := reflect.New(t)
	if err := valDec.Unmarshal(w.V, p.Interface()); err != nil {
		return reflect.Value{}, fmt.Errorf("script: decoding %s: %w", w.T, err)
	}
	if err := raise(p.Elem(), 0); err != nil {
		return reflect.Value{}, err
	}
	return p.Elem(), nil
}

// decodeAny is decodeValue for callers that want a Go value.
func decodeAny(w Value) (any, error) {
	v, err := decodeValue(w)
	if err != nil || !v.IsValid() {
		return nil, err
	}
	if v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil, nil
		}
		return v.Elem().Interface(), nil
	}
	return v.Interface(), nil
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

func isNumericSlice(t reflect.Type) bool {
	if t.Kind() != reflect.Slice {
		return false
	}
	switch t.Elem().Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

const maxDepth = 32

// typeDesc writes t in Go syntax, structurally (names of defined types are dropped, except
// time.Time), or says why t cannot cross.
func typeDesc(t reflect.Type, depth int) (string, error) {
	if depth > maxDepth {
		return "", fmt.Errorf("%w: type nested deeper than %d (recursive?)", ErrNotWireable, maxDepth)
	}
	if t == timeType {
		return "time.Time", nil
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.String:
		return t.Kind().String(), nil
	case reflect.Slice:
		e, err := typeDesc(t.Elem(), depth+1)
		return "[]" + e, err
	case reflect.Array:
		e, err := typeDesc(t.Elem(), depth+1)
		return "[" + strconv.Itoa(t.Len()) + "]" + e, err
	case reflect.Pointer:
		e, err := typeDesc(t.Elem(), depth+1)
		return "*" + e, err
	case reflect.Map:
		k, err := typeDesc(t.Key(), depth+1)
		if err != nil {
			return "", err
		}
		e, err := typeDesc(t.Elem(), depth+1)
		return "map[" + k + "]" + e, err
	case reflect.Interface:
		return "any", nil
	case reflect.Struct:
		var b strings.Builder
		b.WriteString("struct {")
		n := 0
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous {
				return "", fmt.Errorf("%w: embedded field %s of %s", ErrNotWireable, f.Name, t)
			}
			if !f.IsExported() {
				continue
			}
			ft, err := typeDesc(f.Type, depth+1)
			if err != nil {
				return "", fmt.Errorf("field %s: %w", f.Name, err)
			}
			if n > 0 {
				b.WriteString(";")
			}
			b.WriteString(" " + f.Name + " " + ft)
			if f.Tag != "" {
				b.WriteString(" " + strconv.Quote(string(f.Tag)))
			}
			n++
		}
		if n > 0 {
			b.WriteString(" ")
		}
		b.WriteString("}")
		return b.String(), nil
	}
	return "", fmt.Errorf("%w: a %s (%s)", ErrNotWireable, t.Kind(), t)
}

var basicTypes = map[string]reflect.Type{
	"bool": reflect.TypeFor[bool](), "string": reflect.TypeFor[string](),
	"int": reflect.TypeFor[int](), "int8": reflect.TypeFor[int8](), "int16": reflect.TypeFor[int16](),
	"int32": reflect.TypeFor[int32](), "int64": reflect.TypeFor[int64](),
	"uint": reflect.TypeFor[uint](), "uint8": reflect.TypeFor[uint8](), "uint16": reflect.TypeFor[uint16](),
	"uint32": reflect.TypeFor[uint32](), "uint64": reflect.TypeFor[uint64](), "uintptr": reflect.TypeFor[uintptr](),
	"float32": reflect.TypeFor[float32](), "float64": reflect.TypeFor[float64](),
	"byte": reflect.TypeFor[byte](), "rune": reflect.TypeFor[rune](), "any": anyType,
}

// Bounds on what a type description may ask for, so that a small hostile message or file cannot
// make the receiver build huge types or allocate much.
const (
	maxTypeDesc   = 1 << 16
	maxArrayBytes = 1 << 24
	maxFields     = 1024
)

// typeCache remembers built types by description, so that a stream of values of one type
// parses its description once. It is bounded: a peer sending ever new types cannot grow it.
var typeCache struct {
	sync.Mutex
	m map[string]reflect.Type
}

const maxCachedTypes = 1024

// buildType turns a description written by typeDesc back into a type.
func buildType(desc string) (reflect.Type, error) {
	typeCache.Lock()
	t, ok := typeCache.m[desc]
	typeCache.Unlock()
	if ok {
		return t, nil
	}
	t, err := parseType(desc)
	if err != nil {
		return nil, err
	}
	typeCache.Lock()
	if typeCache.m == nil || len(typeCache.m) >= maxCachedTypes {
		typeCache.m = make(map[string]reflect.Type)
	}
	typeCache.m[desc] = t
	typeCache.Unlock()
	return t, nil
}

func parseType(desc string) (t reflect.Type, err error) {
	if len(desc) > maxTypeDesc {
		return nil, fmt.Errorf("script: type description of %d bytes is too long", len(desc))
	}
	expr, err := parser.ParseExpr(desc)
	if err != nil {
		return nil, fmt.Errorf("script: bad type %q: %v", desc, err)
	}
	defer func() {
		// reflect's constructors panic on what the checks below missed; a bad description is
		// an error, never a crash.
		if p := recover(); p != nil {
			t, err = nil, fmt.Errorf("script: bad type %q: %v", desc, p)
		}
	}()
	return typeOfExpr(expr, 0)
}

func typeOfExpr(e ast.Expr, depth int) (reflect.Type, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("script: type nested deeper than %d", maxDepth)
	}
	switch e := e.(type) {
	case *ast.Ident:
		if t, ok := basicTypes[e.Name]; ok {
			return t, nil
		}
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok && x.Name == "time" && e.Sel.Name == "Time" {
			return timeType, nil
		}
	case *ast.ParenExpr:
		return typeOfExpr(e.X, depth+1)
	case *ast.StarExpr:
		el, err := typeOfExpr(e.X, depth+1)
		if err != nil {
			return nil, err
		}
		return reflect.PointerTo(el), nil
	case *ast.ArrayType:
		el, err := typeOfExpr(e.Elt, depth+1)
		if err != nil {
			return nil, err
		}
		if e.Len == nil {
			return reflect.SliceOf(el), nil
		}
		lit, ok := e.Len.(*ast.BasicLit)
		if !ok || lit.Kind != token.INT {
			break
		}
		n, err := strconv.ParseInt(lit.Value, 10, 64)
		if err != nil || n < 0 || (el.Size() > 0 && n > maxArrayBytes/int64(el.Size())) || n > maxArrayBytes {
			return nil, fmt.Errorf("script: array length %s out of range", lit.Value)
		}
		return reflect.ArrayOf(int(n), el), nil
	case *ast.MapType:
		k, err := typeOfExpr(e.Key, depth+1)
		if err != nil {
			return nil, err
		}
		if !k.Comparable() {
			return nil, fmt.Errorf("script: map key type %s is not comparable", k)
		}
		v, err := typeOfExpr(e.Value, depth+1)
		if err != nil {
			return nil, err
		}
		return reflect.MapOf(k, v), nil
	case *ast.InterfaceType:
		if e.Methods == nil || len(e.Methods.List) == 0 {
			return anyType, nil
		}
	case *ast.StructType:
		var fields []reflect.StructField
		seen := map[string]bool{}
		for _, f := range e.Fields.List {
			ft, err := typeOfExpr(f.Type, depth+1)
			if err != nil {
				return nil, err
			}
			var tag string
			if f.Tag != nil {
				if tag, err = strconv.Unquote(f.Tag.Value); err != nil {
					return nil, fmt.Errorf("script: bad struct tag %s", f.Tag.Value)
				}
			}
			if len(f.Names) == 0 {
				return nil, errors.New("script: embedded fields are not supported")
			}
			for _, name := range f.Names {
				if !token.IsExported(name.Name) || seen[name.Name] {
					return nil, fmt.Errorf("script: bad or repeated field name %q", name.Name)
				}
				seen[name.Name] = true
				fields = append(fields, reflect.StructField{Name: name.Name, Type: ft, Tag: reflect.StructTag(tag)})
			}
			if len(fields) > maxFields {
				return nil, fmt.Errorf("script: more than %d fields", maxFields)
			}
		}
		st := reflect.StructOf(fields)
		if st.Size() > maxArrayBytes {
			return nil, errors.New("script: struct too large")
		}
		return st, nil
	}
	return nil, fmt.Errorf("script: unsupported type expression %T", e)
}

// lower returns a copy of v in which every non-nil interface slot holds a Value (its content,
// described), so that the receiver can rebuild the dynamic types. Values of types without
// interfaces are returned as they are.
func lower(v reflect.Value, depth int) (reflect.Value, error) {
	if !hasInterface(v.Type(), 0) {
		return v, nil
	}
	if depth > maxDepth {
		return reflect.Value{}, fmt.Errorf("%w: value nested deeper than %d (cyclic?)", ErrNotWireable, maxDepth)
	}
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() {
			return v, nil
		}
		w, err := encodeNested(v.Elem(), depth)
		if err != nil {
			return reflect.Value{}, err
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(reflect.ValueOf(w))
		return out, nil
	case reflect.Pointer:
		if v.IsNil() {
			return v, nil
		}
		e, err := lower(v.Elem(), depth+1)
		if err != nil {
			return reflect.Value{}, err
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(e)
		return p, nil
	case reflect.Slice, reflect.Array:
		var out reflect.Value
		if v.Kind() == reflect.Slice {
			if v.IsNil() {
				return v, nil
			}
			out = reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		} else {
			out = reflect.New(v.Type()).Elem()
		}
		for i := range v.Len() {
			e, err := lower(v.Index(i), depth+1)
			if err != nil {
				return reflect.Value{}, err
			}
			out.Index(i).Set(e)
		}
		return out, nil
	case reflect.Map:
		if v.IsNil() {
			return v, nil
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		keyIface := v.Type().Key().Kind() == reflect.Interface
		for it := v.MapRange(); it.Next(); {
			k := it.Key()
			if keyIface && !k.IsNil() {
				if !plainKey(k.Elem().Kind()) {
					return reflect.Value{}, fmt.Errorf("%w: map key of type %s in an interface-keyed map", ErrNotWireable, k.Elem().Type())
				}
			} else if k2, err := lower(k, depth+1); err != nil {
				return reflect.Value{}, err
			} else {
				k = k2
			}
			e, err := lower(it.Value(), depth+1)
			if err != nil {
				return reflect.Value{}, err
			}
			out.SetMapIndex(k, e)
		}
		return out, nil
	case reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				continue
			}
			e, err := lower(v.Field(i), depth+1)
			if err != nil {
				return reflect.Value{}, err
			}
			out.Field(i).Set(e)
		}
		return out, nil
	}
	return v, nil
}

func encodeNested(v reflect.Value, depth int) (Value, error) {
	t := v.Type()
	desc, err := typeDesc(t, 0)
	if err != nil {
		return Value{}, err
	}
	if isNumericSlice(t) {
		return encodeValue(v)
	}
	low, err := lower(v, depth+1)
	if err != nil {
		return Value{}, err
	}
	b, err := valEnc.Marshal(low.Interface())
	if err != nil {
		return Value{}, fmt.Errorf("%w: %s: %v", ErrNotWireable, desc, err)
	}
	return Value{T: desc, V: b}, nil
}

func plainKey(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func hasInterface(t reflect.Type, depth int) bool {
	if depth > maxDepth {
		return true // let lower report the depth
	}
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Slice, reflect.Array, reflect.Pointer:
		return hasInterface(t.Elem(), depth+1)
	case reflect.Map:
		return hasInterface(t.Key(), depth+1) || hasInterface(t.Elem(), depth+1)
	case reflect.Struct:
		if t == timeType {
			return false
		}
		for i := range t.NumField() {
			if hasInterface(t.Field(i).Type, depth+1) {
				return true
			}
		}
	}
	return false
}

// raise undoes lower in place: every interface slot of v holding a Value gets the value it
// describes; plain numbers in interface-keyed maps become int where they fit.
func raise(v reflect.Value, depth int) error {
	if !hasInterface(v.Type(), 0) {
		return nil
	}
	if depth > maxDepth {
		return errors.New("script: value nested too deep")
	}
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() {
			return nil
		}
		switch x := v.Elem().Interface().(type) {
		case Value:
			inner, err := decodeValue(x)
			if err != nil {
				return err
			}
			if inner.IsValid() {
				if inner.Kind() == reflect.Interface {
					if inner.IsNil() {
						v.SetZero()
						return nil
					}
					inner = inner.Elem()
				}
				v.Set(inner)
			} else {
				v.SetZero()
			}
		case uint64:
			if x <= 1<<62 {
				v.Set(reflect.ValueOf(int(x)))
			}
		case int64:
			v.Set(reflect.ValueOf(int(x)))
		case bool, string, float64, []byte:
			// plain CBOR in an interface slot: only hostile or hand-made input has it there, and
			// it is harmless.
		default:
			// A tag we do not know (big numbers, …) or a generic container: lower never writes
			// those, and they would not survive another round trip.
			return fmt.Errorf("script: unexpected %T in an interface value", x)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			return raise(v.Elem(), depth+1)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := raise(v.Index(i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				if err := raise(v.Field(i), depth+1); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		kt := v.Type().Key()
		type kv struct{ k, v reflect.Value }
		var fix []kv
		for it := v.MapRange(); it.Next(); {
			k := it.Key()
			if kt.Kind() == reflect.Interface {
				nk := reflect.New(kt).Elem()
				nk.Set(k)
				if err := raise(nk, depth+1); err != nil {
					return err
				}
				k2 := nk
				e := reflect.New(v.Type().Elem()).Elem()
				e.Set(it.Value())
				if err := raise(e, depth+1); err != nil {
					return err
				}
				fix = append(fix, kv{k, reflect.Value{}}, kv{k2, e})
				continue
			}
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(it.Value())
			if err := raise(e, depth+1); err != nil {
				return err
			}
			fix = append(fix, kv{k, e})
		}
		for _, f := range fix {
			v.SetMapIndex(f.k, f.v)
		}
	}
	return nil
}
