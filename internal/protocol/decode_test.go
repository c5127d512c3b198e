package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
)

// refDecodeStrict is the plain reference for decodeStrict: a json.Decoder
// with DisallowUnknownFields, and nothing after the value.
func refDecodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// FuzzDecodeStrict checks decodeStrict against the json.Decoder it
// replaces, for every type a peer's message decodes into: both refuse the
// same bodies, and decode the others to the same value.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"files":[{"name":"a","size":1}],"options":{"k":"v"},"submission_id":"s"}`,
		`{"files":[{"name":"a","size":1,"mode":1}]}`,
		`{"FILES":[{"NaMe":"a","\u017fize":1}]}`,
		`{"job_id":"x","state":"queued","submitted_at":"2026-01-02T03:04:05Z","files":[],"attempts":1,"started_at":null}`,
		`{"job":{"job_id":"x","results":[{"name":"a","size":1,"sha256":"00"}],"extra":1},"files":[]}`,
		`{"version":"v","protocol":1,"workers":{"max_jobs":1,"workers":[{"id":1,"state":"idle","since":"2026-01-02T03:04:05Z"}]},"disks":[],"config":{"A":"b"}}`,
		`{"code":"x","message":"y"}`,
		`{"sha256":"ab"} `,
		`[1,{"a":[]}]`,
		`null`,
		`{"records":["a","b"],"done":true,"x":null}`,
		`{"n":1e2}`,
		`{"files":[]} {}`,
	} {
		f.Add([]byte(s))
	}
	types := []func() any{
		func() any { return &Submit{} }, func() any { return &JobInfo{} }, func() any { return &Results{} },
		func() any { return &AdminStatus{} }, func() any { return &Error{} }, func() any { return &FileDone{} },
		func() any { return &JobRef{} }, func() any { return &Empty{} }, func() any { return &LogsReply{} },
		func() any { return &SetMaxJobs{} }, func() any { return &QueueReply{} }, func() any { return &SubmitReady{} },
		func() any { return &Event{} }, func() any { return &StatusReply{} },
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, newV := range types {
			got, want := newV(), newV()
			gerr, werr := decodeStrict(b, got), refDecodeStrict(b, want)
			if (gerr == nil) != (werr == nil) {
				t.Fatalf("decodeStrict(%q, %T) = %v, json.Decoder = %v", b, got, gerr, werr)
			}
			if gerr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("decodeStrict(%q, %T) = %+v, json.Decoder %+v", b, got, got, want)
			}
		}
	})
}
