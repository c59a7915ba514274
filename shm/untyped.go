package shm

import (
	"fmt"
	"reflect"
	"unsafe"
)

// elemType returns the Go type of the elements, if this process knows it (every basic type,
// and any type this process has used as a SharedArray element).
func (a *Array) elemType() (reflect.Type, error) {
	t, ok := types.Load(a.md.elem)
	if !ok || t.(reflect.Type).Size() != uintptr(a.md.elemSize) {
		return nil, fmt.Errorf("shm: element type %s unknown in this process", a.md.elem)
	}
	return t.(reflect.Type), nil
}

// elemPtr checks lin and returns a pointer to the element, as a value of type *elem.
func (a *Array) elemPtr(lin int) (reflect.Value, error) {
	t, err := a.elemType()
	if err != nil {
		return reflect.Value{}, err
	}
	b := a.Bytes()
	if b == nil {
		return reflect.Value{}, fmt.Errorf("shm: element %d: %w", lin, ErrNotLocal)
	}
	if lin < 0 || lin >= a.md.length {
		return reflect.Value{}, fmt.Errorf("shm: linear index %d out of range [0,%d)", lin, a.md.length)
	}
	return reflect.NewAt(t, unsafe.Add(unsafe.Pointer(unsafe.SliceData(b)), lin*a.md.elemSize)), nil
}

// Value returns the element at linear index lin (column-major), for code that does not know
// the element type at compile time (the interpreter). It is an error where the array is not
// Local, or out of range.
func (a *Array) Value(lin int) (any, error) {
	p, err := a.elemPtr(lin)
	if err != nil {
		return nil, err
	}
	return p.Elem().Interface(), nil
}

// SetValue stores v at linear index lin, converting it to the element type when Go allows
// (an int into a float64 array, say). It is an error where the array is not Local, out of
// range, or if v does not convert.
func (a *Array) SetValue(lin int, v any) error {
	p, err := a.elemPtr(lin)
	if err != nil {
		return err
	}
	rv := reflect.ValueOf(v)
	t := p.Type().Elem()
	if !rv.IsValid() || !rv.Type().ConvertibleTo(t) {
		return fmt.Errorf("shm: a %T cannot be stored in an array of %s", v, a.md.elem)
	}
	p.Elem().Set(rv.Convert(t))
	return nil
}
