package protocol

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// decodeStrict decodes one JSON value into v: unknown fields and trailing
// data are errors.
//
// It decodes with json.Unmarshal, which works on b in place, and then
// looks for unknown fields itself (fieldWalker): a json.Decoder, the only
// way encoding/json refuses them, copies the whole value into a buffer
// that grows by doubling first, which took twice a large message's size.
func decodeStrict(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return err
	}
	w := fieldWalker{b: b, fields: map[reflect.Type][]jsonField{}}
	return w.value(reflect.TypeOf(v))
}

// jsonField is a field of a struct as encoding/json sees it: its name in
// JSON, folded by foldKey, and its type.
type jsonField struct {
	name, folded string
	typ          reflect.Type
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// fieldWalker walks a JSON value that json.Unmarshal has decoded into a
// value of a given type, and reports the first key of an object that
// does not name a field of the struct it was decoded into, as a
// json.Decoder with DisallowUnknownFields does. The JSON is known to be
// valid: json.Unmarshal took it.
type fieldWalker struct {
	b      []byte
	i      int
	fields map[reflect.Type][]jsonField // by struct type, as they are met
}

func (w *fieldWalker) space() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// value walks the value at w.i, decoded into a t; a nil t takes anything.
func (w *fieldWalker) value(t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType)) {
		t = nil // decoded by its own method, or into anything
	}
	w.space()
	switch w.b[w.i] {
	case '{':
		w.i++
		for {
			w.space()
			switch w.b[w.i] {
			case '}':
				w.i++
				return nil
			case ',':
				w.i++
				w.space()
			}
			key := w.key()
			w.space()
			w.i++ // ':'
			var vt reflect.Type
			if t != nil {
				switch t.Kind() {
				case reflect.Struct:
					f, ok := w.field(t, key)
					if !ok {
						return fmt.Errorf("json: unknown field %q", key)
					}
					vt = f
				case reflect.Map:
					vt = t.Elem()
				}
			}
			if err := w.value(vt); err != nil {
				return err
			}
		}
	case '[':
		w.i++
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for {
			w.space()
			switch w.b[w.i] {
			case ']':
				w.i++
				return nil
			case ',':
				w.i++
			}
			if err := w.value(et); err != nil {
				return err
			}
		}
	case '"':
		w.skipString()
	default: // a number, true, false or null
		for w.i < len(w.b) && !strings.ContainsRune(",]} \t\n\r", rune(w.b[w.i])) {
			w.i++
		}
	}
	return nil
}

// skipString moves past the string at w.i and reports whether it has
// escapes.
func (w *fieldWalker) skipString() (escaped bool) {
	for w.i++; w.b[w.i] != '"'; w.i++ {
		if w.b[w.i] == '\\' {
			escaped = true
			w.i++
		}
	}
	w.i++
	return escaped
}

// key moves past the string at w.i (a key) and returns its value: a
// slice of the message unless it has escapes.
func (w *fieldWalker) key() []byte {
	start := w.i
	if !w.skipString() {
		return w.b[start+1 : w.i-1]
	}
	var s string
	json.Unmarshal(w.b[start:w.i], &s)
	return []byte(s)
}

// field returns the type of t's field that key names, matched as
// encoding/json matches: exactly, or else without regard to case.
func (w *fieldWalker) field(t reflect.Type, key []byte) (reflect.Type, bool) {
	fs, ok := w.fields[t]
	if !ok {
		fs = jsonFields(t, nil)
		w.fields[t] = fs
	}
	for _, f := range fs {
		if f.name == string(key) {
			return f.typ, true
		}
	}
	folded := foldKey(string(key))
	for _, f := range fs {
		if f.folded == folded {
			return f.typ, true
		}
	}
	return nil, false
}

// jsonFields appends the fields of struct t that encoding/json decodes
// into: exported ones not tagged "-", and those of embedded structs
// without a tag.
func jsonFields(t reflect.Type, fs []jsonField) []jsonField {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := sf.Type
		if sf.Anonymous && name == "" {
			et := ft
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				fs = jsonFields(et, fs)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		fs = append(fs, jsonField{name: name, folded: foldKey(name), typ: ft})
	}
	return fs
}
