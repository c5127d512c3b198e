package pacs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"time"
)

// Limits of one STOW-RS exchange.
const (
	// MaxSTOWInstances and MaxSTOWBytes bound one request: a PACS such as
	// Orthanc reads the whole body into memory before it stores anything.
	MaxSTOWInstances = 50
	MaxSTOWBytes     = 64 << 20
	// MaxResponseBytes bounds the response body read: one item of a few
	// hundred bytes per instance.
	MaxResponseBytes = 8 << 20
	// stowBaseTimeout plus one second per MiB sent bounds one request.
	stowBaseTimeout = 2 * time.Minute
	// idleConnTimeout stays below the 1 s after which Orthanc closes an
	// idle connection: a POST on a connection it has just closed fails.
	idleConnTimeout = 500 * time.Millisecond
)

// STOW stores instances with DICOMweb STOW-RS (PS3.18 10.5).
type STOW struct {
	base     string // the service's base URL, without a trailing '/'
	user     string
	password string
	client   *http.Client
}

// NewSTOW returns a STOW-RS client for the service at base (for example
// http://pacs:8042/dicom-web), with basic auth when user is not empty. An
// https URL is verified against the system's roots, or against the PEM
// certificates in caFile when it is not empty. The password is never part
// of an error or a log record.
func NewSTOW(base, user, password, caFile string) (*STOW, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("PACS_DICOMWEB_URL must be an http:// or https:// URL")
	}
	if u.User != nil {
		return nil, errors.New("PACS_DICOMWEB_URL must not carry credentials: use PACS_USERNAME and PACS_PASSWORD_FILE")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("PACS_DICOMWEB_URL must not have a query or fragment")
	}
	tr := &http.Transport{
		Proxy:                 nil, // the PACS is reached directly
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		IdleConnTimeout:       idleConnTimeout,
		ResponseHeaderTimeout: 0, // the PACS stores the whole batch before it answers: the request's deadline bounds it
		MaxIdleConnsPerHost:   2,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("PACS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("PACS_CA_FILE %s: no PEM certificate in it", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &STOW{
		base: strings.TrimRight(u.String(), "/"), user: user, password: password,
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect would resend the credentials elsewhere
		}},
	}, nil
}

// Close releases the client's idle connections.
func (c *STOW) Close() { c.client.CloseIdleConnections() }

// Store sends the instances in one request (the caller keeps it within
// MaxSTOWInstances and MaxSTOWBytes), streamed from their files, and
// returns one Result per instance, in order. An instance counts as stored
// only when its SOP Instance UID (and class) is in the response's
// ReferencedSOPSequence, whatever the HTTP status: a 200 may skip one and
// a 400 or 409 may store some. A request that failed as a whole returns
// an *Error (or a transport error, which is worth retrying).
func (c *STOW) Store(ctx context.Context, insts []Instance) ([]Result, error) {
	var total int64
	for _, in := range insts {
		fi, err := os.Stat(in.Path)
		if err != nil {
			return nil, fmt.Errorf("stow: %w", err)
		}
		total += fi.Size()
	}
	ctx, cancel := context.WithTimeout(ctx, stowBaseTimeout+time.Duration(total>>20)*time.Second)
	defer cancel()

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan error, 1)
	go func() { // ends when every part is written or the pipe is closed
		err := writeParts(mw, insts)
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
		done <- err
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/studies", pr)
	if err != nil {
		pr.Close()
		<-done
		return nil, finalf("stow: %v", err)
	}
	req.Header.Set("Content-Type", mime.FormatMediaType("multipart/related",
		map[string]string{"type": "application/dicom", "boundary": mw.Boundary()}))
	req.Header.Set("Accept", "application/dicom+json")
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.client.Do(req)
	pr.CloseWithError(errors.New("request ended")) // unblocks the writer if the server answered early
	// A part that could not be read (werr) broke the body: the PACS's
	// answer still says, per instance, what it stored.
	<-done
	if err != nil {
		return nil, retryf("stow to %s: %s", c.base, transportMessage(err))
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if rerr != nil {
		return nil, retryf("stow to %s: reading the answer: %s", c.base, transportMessage(rerr))
	}
	if len(body) > MaxResponseBytes {
		return nil, finalf("stow to %s: the answer is over %d bytes", c.base, MaxResponseBytes)
	}
	switch sc := resp.StatusCode; {
	case sc == http.StatusUnauthorized || sc == http.StatusForbidden:
		return nil, finalf("the PACS refused recon's credentials (HTTP %d from %s): check PACS_USERNAME and PACS_PASSWORD_FILE", sc, c.base)
	case sc == http.StatusTooManyRequests || sc >= 500:
		return nil, retryf("stow to %s: HTTP %d%s", c.base, sc, snippet(body))
	case sc == http.StatusOK || sc == http.StatusAccepted || sc == http.StatusBadRequest || sc == http.StatusConflict:
		// Decided per instance below, whatever Content-Type says: Orthanc
		// sends none with 400 and 409.
	default:
		return nil, finalf("stow to %s: HTTP %d%s", c.base, sc, snippet(body))
	}
	var doc dcmJSON
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &doc); err != nil {
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted {
				return nil, retryf("stow to %s: HTTP %d with an answer that is not DICOM JSON", c.base, resp.StatusCode)
			}
			return nil, finalf("stow to %s: HTTP %d%s", c.base, resp.StatusCode, snippet(body))
		}
	}
	stored := map[string]string{} // SOP Instance UID → class
	for _, it := range doc.items("00081199") {
		stored[it.str("00081155")] = it.str("00081150")
	}
	failed := map[string]string{} // SOP Instance UID → reason
	for _, it := range doc.items("00081198") {
		failed[it.str("00081155")] = failureReason(it.num("00081197"))
	}
	out := make([]Result, len(insts))
	for i, in := range insts {
		switch class, ok := stored[in.SOPInstanceUID]; {
		case ok && (class == "" || class == in.SOPClassUID):
			out[i] = Result{Stored: true, Answered: true}
		case ok:
			out[i] = Result{Answered: true, Reason: fmt.Sprintf("the PACS stored it as SOP class %s, not %s", class, in.SOPClassUID)}
		default:
			reason, ok := failed[in.SOPInstanceUID]
			if !ok {
				reason = fmt.Sprintf("HTTP %d and the instance is in neither ReferencedSOPSequence nor FailedSOPSequence", resp.StatusCode)
			}
			out[i] = Result{Answered: true, Reason: "the PACS did not store it: " + reason}
		}
	}
	return out, nil
}

func writeParts(mw *multipart.Writer, insts []Instance) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", "application/dicom") // without it Orthanc skips the part silently
	for _, in := range insts {
		p, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		f, err := os.Open(in.Path)
		if err != nil {
			return err
		}
		_, err = io.Copy(p, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// failureReason names a STOW-RS FailureReason (PS3.18 Table 10.5.3-1 and
// PS3.4 C.4.2.1.5).
func failureReason(code int64) string {
	name := map[int64]string{
		0x0110: "processing failure",
		0x0122: "SOP class not supported",
		0xA700: "out of resources",
		0xA900: "data set does not match SOP class",
		0xC000: "cannot understand",
		0xC122: "referenced transfer syntax not supported",
	}[code]
	switch {
	case code < 0:
		return "FailedSOPSequence gives no FailureReason"
	case name == "":
		return fmt.Sprintf("FailureReason 0x%04X", code)
	}
	return fmt.Sprintf("FailureReason 0x%04X (%s)", code, name)
}

// transportMessage describes a transport error without the request's URL
// (which net/http repeats in every *url.Error).
func transportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// snippet is the start of a response body for an error message.
func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return ": " + s
}

// dcmJSON is a DICOM JSON object (PS3.18 F.2): tag → attribute.
type dcmJSON map[string]dcmAttr

type dcmAttr struct {
	VR    string            `json:"vr"`
	Value []json.RawMessage `json:"Value"`
}

func (d dcmJSON) items(tag string) []dcmJSON {
	var out []dcmJSON
	for _, v := range d[tag].Value {
		var it dcmJSON
		if json.Unmarshal(v, &it) == nil {
			out = append(out, it)
		}
	}
	return out
}

func (d dcmJSON) str(tag string) string {
	a := d[tag]
	if len(a.Value) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(a.Value[0], &s) != nil {
		return ""
	}
	return s
}

// num returns the attribute's first value as a number, or -1.
func (d dcmJSON) num(tag string) int64 {
	a := d[tag]
	if len(a.Value) == 0 {
		return -1
	}
	var n int64
	if json.Unmarshal(a.Value[0], &n) != nil {
		return -1
	}
	return n
}
