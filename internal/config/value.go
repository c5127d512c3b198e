package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/recon-mri/recon/internal/allowlist"
	"github.com/recon-mri/recon/internal/keys"
)

const (
	// maxBackends bounds the entries of BACKEND_SERVERS.
	maxBackends = 64
	// maxHostLen is the longest host name accepted (DNS limit).
	maxHostLen = 253
	// maxShownValue is the most of a value an error message quotes.
	maxShownValue = 64
)

// valueError is why a value was refused. msg follows the key's name
// ("SERVER_PORT must be …"); err, if set, is wrapped for errors.Is.
type valueError struct {
	msg string
	err error
}

func badValue(format string, args ...any) *valueError {
	return &valueError{msg: fmt.Sprintf(format, args...)}
}

// parseValue reads the value v of field f; dir resolves relative paths. The
// result's dynamic type depends on f.typ (see the loader's getters).
func parseValue(f *field, v string, dir string) (any, *valueError) {
	if f.nonEmpty && strings.TrimSpace(v) == "" {
		return nil, badValue("must not be empty")
	}
	switch f.typ {
	case typeString:
		return v, nil
	case typeHost:
		h, ok := parseHost(v)
		if !ok {
			return nil, badValue("must be a host name or an IP address%s", got(v))
		}
		return h, nil
	case typePort, typeInt:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < f.min || n > f.max {
			what := "an integer"
			if f.typ == typePort {
				what = "a port number"
			}
			return nil, badValue("must be %s from %d to %d%s", what, f.min, f.max, got(v))
		}
		return int(n), nil
	case typeMiB:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < f.min || n > f.max {
			return nil, badValue("must be a whole number of MiB from %d to %d%s", f.min, f.max, got(v))
		}
		return n << 20, nil
	case typeSize:
		n, ok := parseSize(v)
		if !ok || n < f.min || n > f.max {
			return nil, badValue("must be a size from %s to %s: bytes, or a number with a KiB, MiB, GiB or TiB suffix%s",
				formatSize(f.min), formatSize(f.max), got(v))
		}
		return n, nil
	case typeSeconds, typeHours:
		unit, name, per := "s", "seconds", time.Second
		if f.typ == typeHours {
			unit, name, per = "h", "hours", time.Hour
		}
		d, ok := parseDecimalDuration(v, unit)
		if !ok || d < f.dmin || d > f.dmax {
			return nil, badValue("must be a number of %s from %s to %s%s", name,
				formatDecimal(f.dmin, per), formatDecimal(f.dmax, per), got(v))
		}
		return d, nil
	case typeKey:
		k, err := keys.Parse(v)
		if err != nil {
			return nil, keyError(err)
		}
		return k, nil
	case typePath:
		return resolvePath(dir, strings.TrimSpace(v)), nil
	case typeFileName:
		if strings.ContainsAny(v, `/\`) || v == "." || v == ".." {
			return nil, badValue("must be a plain file name, without a directory%s", got(v))
		}
		return v, nil
	case typeLogLevel:
		l, ok := parseLogLevel(v)
		if !ok {
			return nil, badValue("must be DEBUG, INFO, WARNING, WARN or ERROR%s", got(v))
		}
		return l, nil
	case typeIPList:
		return parseIPList(v)
	case typeHostPorts:
		return parseHostPorts(v)
	case typeGlob:
		// One pattern, or several separated by commas (*.cfl,*.hdr).
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				return nil, badValue("must be file name patterns separated by commas, none empty%s", got(v))
			}
			if strings.ContainsAny(p, `/\`) {
				return nil, badValue("must be a file name pattern, without a directory%s", got(v))
			}
			if _, err := filepath.Match(p, ""); err != nil {
				return nil, badValue("must be a valid file name pattern (filepath.Match)%s", got(v))
			}
		}
		return v, nil
	case typeJSONOptions:
		return parseJSONOptions(v)
	case typeBool:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, badValue("must be true or false%s", got(v))
	case typeUIDRoot:
		v = strings.TrimSpace(v)
		if !validUIDRoot(v) {
			return nil, badValue("must be a DICOM UID root (digits in components separated by dots, no leading zeros) of at most %d characters%s", maxUIDRootLen, got(v))
		}
		return v, nil
	case typeAddr:
		if v == "" {
			return "", nil
		}
		host, port, err := net.SplitHostPort(v)
		if err != nil {
			return nil, badValue("must be host:port, or empty%s", got(v))
		}
		if host != "" {
			if _, ok := parseHost(host); !ok {
				return nil, badValue("must be host:port with a host name or an IP address%s", got(v))
			}
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return nil, badValue("must be host:port with a port from 0 to 65535%s", got(v))
		}
		if !IsLoopbackHost(host) {
			return nil, badValue("must be on loopback (127.0.0.1:PORT, [::1]:PORT, localhost:PORT or :PORT): the endpoint has no key%s", got(v))
		}
		return v, nil
	}
	panic(fmt.Sprintf("config: field %s has unknown type %d", f.name, f.typ))
}

// IsLoopbackHost reports whether host, the host part of a listener's
// host:port, stays on the machine: "" (recon reads a bare :PORT as
// 127.0.0.1), "localhost", or a loopback IP address (127.0.0.0/8, ::1,
// also IPv4-mapped). Other host names are refused, since what they resolve
// to can change.
func IsLoopbackHost(host string) bool {
	if host == "" || strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Zone() == "" && a.Unmap().IsLoopback()
}

// keyError describes a keys.Parse error. Neither it nor the keys errors
// contain the value.
func keyError(err error) *valueError {
	var msg string
	switch {
	case errors.Is(err, keys.ErrPlaceholder):
		msg = "is still a placeholder: generate a key with recon keygen and put it here"
	case errors.Is(err, keys.ErrEmpty):
		msg = "is empty: generate a key with recon keygen and put it here"
	case errors.Is(err, keys.ErrAllZero):
		msg = "is all zero bytes: generate a real key with recon keygen"
	default:
		msg = "is not a valid key: want 32 bytes in base64 (44 characters, as printed by recon keygen)"
	}
	return &valueError{msg: msg, err: err}
}

// got quotes a value for an error message, unless it might be a key: a long
// run of base64 characters is not shown, so a key typed under the wrong name
// never reaches a log.
func got(v string) string {
	if mightBeKey(v) {
		return " (value not shown)"
	}
	if len(v) > maxShownValue {
		cut := maxShownValue
		for cut > 0 && !utf8RuneStart(v[cut]) {
			cut--
		}
		return fmt.Sprintf(" (got %q…)", v[:cut])
	}
	return fmt.Sprintf(" (got %q)", v)
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// mightBeKey reports whether v contains a run of more than 16 base64
// characters: enough to hold a meaningful part of a key.
func mightBeKey(v string) bool {
	run := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("+/-_=", c) >= 0 {
			run++
			if run > 16 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

// parseHost accepts a host name or an IP address (IPv6 with or without
// brackets) and returns it without brackets.
func parseHost(h string) (string, bool) {
	h = strings.TrimSpace(h)
	if h == "" || len(h) > maxHostLen {
		return "", false
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		a, err := netip.ParseAddr(h[1 : len(h)-1])
		if err != nil || !a.Is6() {
			return "", false
		}
		return h[1 : len(h)-1], true
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h, true
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return h, true
}

var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"KIB", 10}, {"MIB", 20}, {"GIB", 30}, {"TIB", 40}, {"B", 0}, {"", 0},
}

// parseSize reads a byte count: digits, optionally followed by B, KiB, MiB,
// GiB or TiB (any case, space allowed).
func parseSize(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	i := 0
	for i < len(v) && '0' <= v[i] && v[i] <= '9' {
		i++
	}
	if i == 0 || i > 18 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:i], 10, 64)
	if err != nil {
		return 0, false
	}
	unit := strings.ToUpper(strings.TrimSpace(v[i:]))
	for _, u := range sizeUnits {
		if unit == u.suffix {
			if n > (1<<62)>>u.shift {
				return 0, false
			}
			return n << u.shift, true
		}
	}
	return 0, false
}

// formatSize writes n with the largest binary unit that divides it.
func formatSize(n int64) string {
	for i := 3; i >= 0; i-- {
		u := sizeUnits[i]
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix[:1] + "i" + u.suffix[2:]
		}
	}
	return strconv.FormatInt(n, 10)
}

// parseDecimalDuration reads a non-negative decimal number ("10", "0.25") of
// the unit ("s" or "h").
func parseDecimalDuration(v, unit string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 24 {
		return 0, false
	}
	dot := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case '0' <= c && c <= '9':
		case c == '.' && !dot && i > 0 && i < len(v)-1:
			dot = true
		default:
			return 0, false
		}
	}
	d, err := time.ParseDuration(v + unit)
	if err != nil {
		return 0, false
	}
	return d, true
}

func formatDecimal(d, per time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(per), 'f', -1, 64)
}

func resolvePath(dir, p string) string {
	if p == "" {
		return ""
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

func parseLogLevel(v string) (slog.Level, bool) {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "DEBUG":
		return slog.LevelDebug, true
	case "INFO":
		return slog.LevelInfo, true
	case "WARNING", "WARN":
		return slog.LevelWarn, true
	case "ERROR":
		return slog.LevelError, true
	}
	return 0, false
}

func parseIPList(v string) (*allowlist.List, *valueError) {
	l, err := allowlist.Parse(v)
	if err == nil {
		return l, nil
	}
	// allowlist names the bad entry; make sure that is not a key. Addresses
	// and prefixes never hold a long enough run of base64 characters.
	if mightBeKey(v) {
		return nil, badValue("must be a comma-separated list of IP addresses and CIDR prefixes (value not shown)")
	}
	return nil, badValue("must be a comma-separated list of IP addresses and CIDR prefixes: %v", err)
}

func parseHostPorts(v string) ([]string, *valueError) {
	parts := strings.Split(v, ",")
	if len(parts) > maxBackends {
		return nil, badValue("must list at most %d host:port entries (got %d)", maxBackends, len(parts))
	}
	out := make([]string, 0, len(parts))
	seen := map[string]bool{}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, badValue("must be a comma-separated list of host:port; entry %d is empty", i+1)
		}
		host, port, err := net.SplitHostPort(p)
		if err != nil {
			return nil, badValue("must be a comma-separated list of host:port; entry %d is not host:port%s", i+1, got(p))
		}
		h, ok := parseHost(host)
		if !ok {
			return nil, badValue("must be a comma-separated list of host:port; entry %d has a bad host%s", i+1, got(p))
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, badValue("must be a comma-separated list of host:port; entry %d has a bad port (1 to 65535)%s", i+1, got(p))
		}
		hp := net.JoinHostPort(h, strconv.Itoa(n))
		if seen[hp] {
			return nil, badValue("lists %s twice", hp)
		}
		seen[hp] = true
		out = append(out, hp)
	}
	return out, nil
}

// parseJSONOptions reads a JSON object whose values are strings, numbers or
// booleans, as map[string]string (numbers keep their JSON text). An empty
// value is the empty object. Duplicate names and trailing data are refused.
func parseJSONOptions(v string) (map[string]string, *valueError) {
	const want = "must be a JSON object whose values are strings, numbers or booleans"
	if strings.TrimSpace(v) == "" {
		return map[string]string{}, nil
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, badValue("%s", want)
	}
	m := map[string]string{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, badValue("%s: %s", want, jsonErr(err))
		}
		name, ok := t.(string)
		if !ok {
			return nil, badValue("%s", want)
		}
		if _, dup := m[name]; dup {
			return nil, badValue("%s: option%s appears twice", want, got(name))
		}
		t, err = dec.Token()
		if err != nil {
			return nil, badValue("%s: %s", want, jsonErr(err))
		}
		switch x := t.(type) {
		case string:
			m[name] = x
		case json.Number:
			m[name] = x.String()
		case bool:
			m[name] = strconv.FormatBool(x)
		default:
			return nil, badValue("%s: option%s has another kind of value", want, got(name))
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, badValue("%s", want)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badValue("%s: text after the object", want)
	}
	return m, nil
}

// jsonErr describes a JSON syntax error without quoting the input.
func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at offset %d", se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end"
	}
	return "syntax error"
}

// maxUIDRootLen is the longest DICOM_UID_ROOT: a UID has at most 64
// characters, and a new one needs a dot and at least 20 unique digits
// (internal/dicom.CheckRoot, the same rule).
const maxUIDRootLen = 64 - 1 - 20

// validUIDRoot reports whether s is a DICOM UID of at most maxUIDRootLen
// characters.
func validUIDRoot(s string) bool {
	if s == "" || len(s) > maxUIDRootLen {
		return false
	}
	for _, c := range strings.Split(s, ".") {
		if c == "" || strings.Trim(c, "0123456789") != "" || (len(c) > 1 && c[0] == '0') {
			return false
		}
	}
	return true
}
