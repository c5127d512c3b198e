package pacs

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const mrClass = "1.2.840.10008.5.1.4.1.1.4"

// part10 builds a minimal Part 10 file: preamble, DICM, a meta group with
// the given SOP class and instance UIDs, and body bytes after it.
func part10(class, inst string, body []byte) []byte {
	var meta bytes.Buffer
	el := func(e uint16, vr, v string) {
		if len(v)%2 == 1 {
			v += "\x00"
		}
		binary.Write(&meta, binary.LittleEndian, [2]uint16{2, e})
		meta.WriteString(vr)
		binary.Write(&meta, binary.LittleEndian, uint16(len(v)))
		meta.WriteString(v)
	}
	if class != "" {
		el(0x0002, "UI", class)
	}
	if inst != "" {
		el(0x0003, "UI", inst)
	}
	el(0x0010, "UI", "1.2.840.10008.1.2.1")
	var b bytes.Buffer
	b.Write(make([]byte, 128))
	b.WriteString("DICM")
	binary.Write(&b, binary.LittleEndian, [2]uint16{2, 0})
	b.WriteString("UL")
	binary.Write(&b, binary.LittleEndian, uint16(4))
	binary.Write(&b, binary.LittleEndian, uint32(meta.Len()))
	b.Write(meta.Bytes())
	b.Write(body)
	return b.Bytes()
}

func TestReadMeta(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name    string
		content []byte
		want    Meta
		err     string
	}{
		{"mr", part10(mrClass, "2.25.1", []byte("pixels")), Meta{mrClass, "2.25.1", "1.2.840.10008.1.2.1"}, ""},
		{"odd uid padded", part10(mrClass, "2.25.12", nil), Meta{mrClass, "2.25.12", "1.2.840.10008.1.2.1"}, ""},
		{"no instance uid", part10(mrClass, "", nil), Meta{}, "no SOP Class or SOP Instance UID"},
		{"bad uid", part10(mrClass, "2.25.x", nil), Meta{}, "not a valid UID"},
		{"text", []byte("hello"), Meta{}, ErrNotDICOM.Error()},
		{"no DICM", make([]byte, 300), Meta{}, ErrNotDICOM.Error()},
		{"huge group", append(append(make([]byte, 128), "DICM\x02\x00\x00\x00UL\x04\x00"...), 0xff, 0xff, 0xff, 0x7f), Meta{}, "over"},
		{"truncated", part10(mrClass, "2.25.1", nil)[:150], Meta{}, "file meta"},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, c.content, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadMeta(p)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: ReadMeta = %v, %v; want an error with %q", c.name, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: ReadMeta = %+v, %v; want %+v", c.name, got, err, c.want)
		}
		if ok, err := IsDICOM(p); !ok || err != nil {
			t.Errorf("%s: IsDICOM = %v, %v", c.name, ok, err)
		}
	}
}

func FuzzReadMeta(f *testing.F) {
	f.Add(part10(mrClass, "2.25.1", []byte("x")))
	f.Add([]byte("DICM"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := readMeta(bytes.NewReader(b))
		if err == nil && (!validUID(m.SOPClassUID) || !validUID(m.SOPInstanceUID)) {
			t.Fatalf("accepted %+v", m)
		}
	})
}

// fakeSTOW answers like Orthanc 1.10 with the DICOMweb plugin 1.7 (see
// docs/PACS.md): it reads every part, stores those whose SOP Instance UID
// is in store, and answers with status and, per instance, the sequences.
type fakeSTOW struct {
	status   int
	store    map[string]bool // SOP Instance UIDs it stores
	fail     map[string]int  // SOP Instance UIDs it fails, with FailureReason
	noType   bool            // no Content-Type on the answer (Orthanc's 400/409)
	parts    int
	typeSeen string
	auth     string
}

func (f *fakeSTOW) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.auth = r.Header.Get("Authorization")
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	f.typeSeen = mt + ";" + params["type"]
	if err != nil || mt != "multipart/related" || params["type"] != "application/dicom" {
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var ref, failed []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.parts++
		b, _ := io.ReadAll(p)
		m, err := readMeta(bytes.NewReader(b))
		if err != nil || p.Header.Get("Content-Type") != "application/dicom" {
			continue // in neither sequence
		}
		switch {
		case f.store[m.SOPInstanceUID]:
			ref = append(ref, fmt.Sprintf(`{"00081150":{"vr":"UI","Value":[%q]},"00081155":{"vr":"UI","Value":[%q]}}`, m.SOPClassUID, m.SOPInstanceUID))
		case f.fail[m.SOPInstanceUID] != 0:
			failed = append(failed, fmt.Sprintf(`{"00081150":{"vr":"UI","Value":[%q]},"00081155":{"vr":"UI","Value":[%q]},"00081197":{"vr":"US","Value":[%d]}}`,
				m.SOPClassUID, m.SOPInstanceUID, f.fail[m.SOPInstanceUID]))
		}
	}
	if !f.noType {
		w.Header().Set("Content-Type", "application/dicom+json")
	} else {
		w.Header()["Content-Type"] = nil
	}
	w.WriteHeader(f.status)
	fmt.Fprintf(w, `{"00081199":{"vr":"SQ","Value":[%s]},"00081198":{"vr":"SQ","Value":[%s]}}`, strings.Join(ref, ","), strings.Join(failed, ","))
}

func files(t *testing.T, uids ...string) []Instance {
	t.Helper()
	dir := t.TempDir()
	var out []Instance
	for i, u := range uids {
		p := filepath.Join(dir, fmt.Sprintf("%d.dcm", i))
		if err := os.WriteFile(p, part10(mrClass, u, bytes.Repeat([]byte{byte(i)}, 1000)), 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, Instance{Path: p, SOPClassUID: mrClass, SOPInstanceUID: u})
	}
	return out
}

// TestSTOWPerInstance: an instance counts as stored only when the answer
// references it, whatever the status: a 200 that skips one, a 400 without
// Content-Type that stored some, a 409.
func TestSTOWPerInstance(t *testing.T) {
	insts := files(t, "2.25.1", "2.25.2", "2.25.3")
	cases := []struct {
		name   string
		fake   fakeSTOW
		stored []bool
		reason []string
	}{
		{"all", fakeSTOW{status: 200, store: map[string]bool{"2.25.1": true, "2.25.2": true, "2.25.3": true}},
			[]bool{true, true, true}, nil},
		{"200 skips one", fakeSTOW{status: 200, store: map[string]bool{"2.25.1": true, "2.25.3": true}},
			[]bool{true, false, true}, []string{"", "in neither", ""}},
		{"400 stores some", fakeSTOW{status: 400, noType: true, store: map[string]bool{"2.25.1": true}, fail: map[string]int{"2.25.2": 0xC000}},
			[]bool{true, false, false}, []string{"", "0xC000 (cannot understand)", "HTTP 400"}},
		{"409", fakeSTOW{status: 409, noType: true, fail: map[string]int{"2.25.1": 0x0110, "2.25.2": 0x0110, "2.25.3": 0x0110}},
			[]bool{false, false, false}, []string{"0x0110", "0x0110", "0x0110"}},
	}
	for _, c := range cases {
		hs := httptest.NewServer(&c.fake)
		s, err := NewSTOW(hs.URL+"/dicom-web/", "recon", "s3cret", "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Store(context.Background(), insts)
		hs.Close()
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.fake.parts != 3 || c.fake.typeSeen != "multipart/related;application/dicom" || !strings.HasPrefix(c.fake.auth, "Basic ") {
			t.Errorf("%s: the PACS saw %d parts, type %q, auth %q", c.name, c.fake.parts, c.fake.typeSeen, c.fake.auth)
		}
		for i, r := range res {
			if r.Stored != c.stored[i] || !r.Answered {
				t.Errorf("%s: instance %d = %+v, want stored=%v", c.name, i, r, c.stored[i])
			}
			if c.reason != nil && !strings.Contains(r.Reason, c.reason[i]) {
				t.Errorf("%s: instance %d reason %q, want %q", c.name, i, r.Reason, c.reason[i])
			}
		}
	}
}

// TestSTOWRequestErrors: refused credentials are final and name the keys,
// never the password; a 503 and an unreachable PACS are worth retrying.
func TestSTOWRequestErrors(t *testing.T) {
	insts := files(t, "2.25.1")
	for _, c := range []struct {
		status int
		retry  bool
		want   string
	}{
		{401, false, "PACS_PASSWORD_FILE"},
		{403, false, "credentials"},
		{415, false, "HTTP 415"},
		{503, true, "HTTP 503"},
	} {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(c.status)
		}))
		s, _ := NewSTOW(hs.URL, "recon", "s3cret-pw", "")
		_, err := s.Store(context.Background(), insts)
		hs.Close()
		if err == nil || Retryable(err) != c.retry || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("HTTP %d: err = %v (retry %v), want %q, retry %v", c.status, err, Retryable(err), c.want, c.retry)
		}
	}
	// A redirect is not followed (the credentials would go elsewhere);
	// an answer over MaxResponseBytes is not read whole.
	for _, c := range []struct {
		h    http.HandlerFunc
		want string
	}{
		{func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
		}, "HTTP 307"},
		{func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(200)
			w.Write(bytes.Repeat([]byte(" "), MaxResponseBytes+10))
		}, "over"},
	} {
		hs := httptest.NewServer(c.h)
		s, _ := NewSTOW(hs.URL, "recon", "s3cret-pw", "")
		_, err := s.Store(context.Background(), insts)
		hs.Close()
		if err == nil || Retryable(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want a final error with %q", err, c.want)
		}
	}
	hs := httptest.NewServer(http.NotFoundHandler())
	addr := hs.URL
	hs.Close()
	s, _ := NewSTOW(addr, "recon", "s3cret-pw", "")
	if _, err := s.Store(context.Background(), insts); err == nil || !Retryable(err) || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("unreachable PACS: err = %v, want a retryable error", err)
	}
	for _, bad := range []string{"ftp://pacs/x", "http://user:pw@pacs/x", "pacs:8042", "http://pacs/x?q=1"} {
		if _, err := NewSTOW(bad, "", "", ""); err == nil || strings.Contains(err.Error(), "pw@") {
			t.Errorf("NewSTOW(%q) = %v, want a refusal that does not repeat it", bad, err)
		}
	}
}

// TestSTOWTLSVerified: an https PACS whose certificate the system does
// not trust is refused; with its CA in PACS_CA_FILE it is used.
func TestSTOWTLSVerified(t *testing.T) {
	insts := files(t, "2.25.1")
	fake := &fakeSTOW{status: 200, store: map[string]bool{"2.25.1": true}}
	hs := httptest.NewTLSServer(fake)
	defer hs.Close()
	s, _ := NewSTOW(hs.URL, "recon", "pw", "")
	if _, err := s.Store(context.Background(), insts); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: err = %v, want a certificate error", err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewSTOW(hs.URL, "recon", "pw", ca)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Store(context.Background(), insts)
	if err != nil || !res[0].Stored {
		t.Errorf("with PACS_CA_FILE: %+v, %v", res, err)
	}
	if _, err := NewSTOW(hs.URL, "", "", filepath.Join(t.TempDir(), "none.pem")); err == nil {
		t.Errorf("a missing PACS_CA_FILE was accepted")
	}
}

// TestSTOWStreams: the body is streamed from the files (chunked, with no
// Content-Length known in advance), not built whole in memory, and an
// answer that references nothing stores nothing.
func TestSTOWStreams(t *testing.T) {
	uids := make([]string, 8)
	for i := range uids {
		uids[i] = fmt.Sprintf("2.25.%d", i+1)
	}
	insts := files(t, uids...)
	big := bytes.Repeat([]byte{7}, 4<<20)
	for _, in := range insts {
		b, _ := os.ReadFile(in.Path)
		os.WriteFile(in.Path, append(b, big...), 0o600)
	}
	gotFirst := make(chan struct{}, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != -1 {
			t.Errorf("Content-Length %d: the body was built before sending", r.ContentLength)
		}
		_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		mr := multipart.NewReader(r.Body, params["boundary"])
		p, err := mr.NextPart()
		if err == nil {
			io.Copy(io.Discard, p)
			gotFirst <- struct{}{}
		}
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			io.Copy(io.Discard, p)
		}
		w.WriteHeader(200)
		io.WriteString(w, `{}`)
	}))
	defer hs.Close()
	s, _ := NewSTOW(hs.URL, "", "", "")
	res, err := s.Store(context.Background(), insts)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-gotFirst:
	default:
		t.Error("the PACS never saw a whole first part")
	}
	for i, r := range res {
		if r.Stored {
			t.Errorf("instance %d stored by an empty answer", i)
		}
	}
}

// TestParseStatus: storescu's DIMSE status lines.
func TestParseStatus(t *testing.T) {
	for _, c := range []struct {
		line           string
		stored         bool
		warning, regex string
	}{
		{"D: DIMSE Status                  : 0x0000: Success", true, "", ""},
		{"D: DIMSE Status                  : 0xb000: Warning: Coercion of data elements", true, "0xB000", ""},
		{"D: DIMSE Status                  : 0xa700: Refused: Out of resources", false, "", "0xA700 (Refused: Out of resources)"},
		{"D: DIMSE Status                  : 0xc000: Error: Cannot understand", false, "", "0xC000"},
		{"D: DIMSE Status                  : bogus", false, "", "unreadable"},
	} {
		r := parseStatus(c.line)
		if r.Stored != c.stored || !r.Answered || !strings.Contains(r.Warning, c.warning) || !strings.Contains(r.Reason, c.regex) {
			t.Errorf("parseStatus(%q) = %+v", c.line, r)
		}
	}
	if _, err := NewCStore("pacs", "A", "B"); err == nil {
		t.Error("NewCStore without a port was accepted")
	}
	if _, err := NewCStore("pacs:104", strings.Repeat("A", 17), "B"); err == nil {
		t.Error("a 17-character AE title was accepted")
	}
}
