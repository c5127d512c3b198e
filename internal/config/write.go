package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/recon-mri/recon/internal/keys"
)

// commentWidth is the width default files' comments are wrapped at.
const commentWidth = 100

// DefaultServerFile returns a fresh recon.opts with every key at its default
// and the two keys given, laid out like the prototype's example with a
// comment on each key. It is deterministic (for golden tests); the file it
// gives loads with LoadServer, LoadClient and LoadAdmin without warnings.
func DefaultServerFile(shared, admin keys.Key) []byte {
	return defaultFile(reconOpts, map[string]keys.Key{
		"SHARED_KEY":              shared,
		"SERVER_ADMIN_SHARED_KEY": admin,
	})
}

// DefaultRelayFile returns a fresh relay.opts with every key at its default
// and the two keys given. BACKEND_SHARED_KEY is left empty: it must be the
// backends' SHARED_KEY, which the relay cannot know, so LoadRelay warns about
// it until it is set.
func DefaultRelayFile(clients, admin keys.Key) []byte {
	return defaultFile(relayOpts, map[string]keys.Key{
		"SHARED_KEY_RELAY_TO_CLIENTS": clients,
		"RELAY_ADMIN_SHARED_KEY":      admin,
	})
}

// WriteDefaultServer creates the recon.opts file path with defaults and fresh,
// distinct SHARED_KEY and SERVER_ADMIN_SHARED_KEY, mode 0600, creating its
// directory (mode 0700) if need be. It never overwrites a file: if path
// exists, the error wraps fs.ErrExist.
func WriteDefaultServer(path string) error {
	shared, admin, err := twoKeys()
	if err != nil {
		return err
	}
	return writeNew(path, DefaultServerFile(shared, admin))
}

// WriteDefaultRelay creates the relay.opts file path with defaults and fresh,
// distinct SHARED_KEY_RELAY_TO_CLIENTS and RELAY_ADMIN_SHARED_KEY, as
// WriteDefaultServer does.
func WriteDefaultRelay(path string) error {
	clients, admin, err := twoKeys()
	if err != nil {
		return err
	}
	return writeNew(path, DefaultRelayFile(clients, admin))
}

func twoKeys() (a, b keys.Key, err error) {
	if a, err = keys.Generate(); err != nil {
		return a, b, err
	}
	for b.IsZero() || b.Equal(a) {
		if b, err = keys.Generate(); err != nil {
			return a, b, err
		}
	}
	return a, b, nil
}

// writeNew writes data to a new file, mode 0600. A partly written file is
// removed.
func writeNew(path string, data []byte) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err // an *fs.PathError naming path; wraps fs.ErrExist if it exists
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(path))
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

func defaultFile(sch *schema, ks map[string]keys.Key) []byte {
	var b bytes.Buffer
	writeComment(&b, "", sch.title)
	writeComment(&b, "", sch.intro)
	for _, sec := range sch.sections {
		fmt.Fprintf(&b, "\n# --- %s ---\n", sec.title)
		for i, f := range sec.fields {
			if i > 0 {
				b.WriteByte('\n')
			}
			writeComment(&b, "", f.doc)
			v := f.def
			if f.typ == typeKey {
				v = ""
				if k, ok := ks[f.name]; ok {
					v = k.Encode()
				}
			}
			line, err := formatEntry(Entry{Key: f.name, Value: v, Kind: inferKind(v)})
			if err != nil {
				panic("config: default of " + f.name + ": " + err.Error())
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
		if sec.note != "" {
			b.WriteByte('\n')
			writeComment(&b, "", sec.note)
		}
	}
	return b.Bytes()
}

// writeComment writes text as '#' comment lines wrapped at commentWidth.
func writeComment(b *bytes.Buffer, indent, text string) {
	prefix := indent + "#"
	line := prefix
	for _, w := range strings.Fields(text) {
		if len(line) > len(prefix) && len(line)+1+len(w) > commentWidth {
			b.WriteString(line + "\n")
			line = prefix
		}
		line += " " + w
	}
	b.WriteString(line + "\n")
}

// ReferenceMarkdown returns the configuration reference: the rules of the
// file format and a table of every key of recon.opts and relay.opts with its
// type, default, the programs that read it and its meaning. README.md holds a
// copy between the config-reference markers, checked by the tests.
func ReferenceMarkdown() string {
	var b strings.Builder
	b.WriteString("Generated from the schema in `internal/config`: edit it there, then run `go test ./internal/config -update`.\n\n")
	b.WriteString("Both files are lines of `ITEM = VALUE`. Keys are case-insensitive. A value in matching quotes (`\"…\"` or `'…'`) " +
		"is taken literally; otherwise `#` starts a comment, on its own line or after a value. Blank lines are ignored; " +
		"`ITEM =` sets the empty value. A duplicate key is an error; an unknown key is a warning that names the nearest known one. " +
		"Relative paths are relative to the directory of the file. A missing file is created with these defaults and fresh keys " +
		"(mode 0600); a key is 44 characters of base64 as printed by `recon keygen`, and no two roles may share one. " +
		"Each program reads only the keys it uses: a client needs only `SERVER_HOSTNAME`, `SERVER_PORT` and `SHARED_KEY`.\n")
	b.WriteString("\nPrograms: server = `recon server`; client = `recon submit`, `status`, `queue`, `fetch`; watch = `recon watch`; " +
		"admin = `recon admin`; relay = `recon relay`; relay-admin = `recon relay-admin`.\n")
	for _, sch := range []*schema{reconOpts, relayOpts} {
		fmt.Fprintf(&b, "\n### %s\n\n", sch.file)
		b.WriteString("| Key | Type | Default | Used by | Meaning |\n")
		b.WriteString("|---|---|---|---|---|\n")
		for _, sec := range sch.sections {
			for _, f := range sec.fields {
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n",
					f.name, typeColumn(f), defaultColumn(f), f.usedBy, mdEscape(f.doc))
			}
		}
		if len(sch.legacy) > 0 {
			b.WriteString("\nKeys of the Python prototype that recon accepts and ignores, with a warning: ")
			for i, l := range sch.legacy {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("`" + l + "`")
			}
			b.WriteString(".\n")
		}
	}
	return b.String()
}

func typeColumn(f field) string {
	t := typeNames[f.typ]
	switch f.typ {
	case typeInt, typeMiB, typePort:
		t += fmt.Sprintf(", %d to %d", f.min, f.max)
	case typeSize:
		t += fmt.Sprintf(", %s to %s", formatSize(f.min), formatSize(f.max))
	case typeSeconds:
		t += fmt.Sprintf(", %s to %s", formatDecimal(f.dmin, time.Second), formatDecimal(f.dmax, time.Second))
	case typeHours:
		t += fmt.Sprintf(", %s to %s", formatDecimal(f.dmin, time.Hour), formatDecimal(f.dmax, time.Hour))
	}
	return t
}

func defaultColumn(f field) string {
	switch {
	case f.typ == typeKey && f.optional:
		return "unset"
	case f.typ == typeKey:
		return "required"
	case f.def == "":
		return "(empty)"
	}
	return "`" + f.def + "`"
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
