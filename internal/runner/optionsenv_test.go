package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/runner"
)

// jsonLen is the length of opts as RECON_OPTIONS_JSON carries them. None
// of the test values holds '<', '>' or '&', which Marshal alone escapes.
func jsonLen(t *testing.T, opts map[string]string) int {
	t.Helper()
	b, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

// optionsOfJSONLen returns options, mostly control characters (six bytes
// each in JSON), whose JSON is exactly n bytes long.
func optionsOfJSONLen(t *testing.T, n int) map[string]string {
	t.Helper()
	opts := map[string]string{}
	for i := 0; ; i++ {
		k := fmt.Sprintf("K%02d", i)
		opts[k] = ""
		room := n - jsonLen(t, opts)
		switch {
		case room < 0:
			t.Fatalf("cannot build options of %d JSON bytes", n)
		case room >= 6*runner.MaxOptionValueBytes:
			opts[k] = strings.Repeat("\x01", runner.MaxOptionValueBytes)
			continue
		}
		opts[k] = strings.Repeat("\x01", room/6) + strings.Repeat("a", room%6)
		if got := jsonLen(t, opts); got != n {
			t.Fatalf("options of %d JSON bytes, want %d", got, n)
		}
		return opts
	}
}

func TestOptionsEnv(t *testing.T) {
	t.Parallel()
	// The case: options within every cap of the protocol (64
	// options, 4 KiB each, 32 KiB in all), all control characters.
	atTotalCap := map[string]string{}
	for i := range 8 {
		atTotalCap[fmt.Sprintf("K%d", i)] = strings.Repeat("\x01", protocol.MaxOptionsTotal/8-2)
	}
	notUTF8 := map[string]string{}
	for i := range 8 {
		notUTF8[fmt.Sprintf("K%d", i)] = strings.Repeat("\xff", runner.MaxOptionValueBytes)
	}
	plainMax := map[string]string{}
	for i := range 8 {
		plainMax[fmt.Sprintf("K%d", i)] = strings.Repeat("v", protocol.MaxOptionsTotal/8-2)
	}
	tests := []struct {
		name     string
		opts     map[string]string
		protocol bool   // passes protocol.ValidateOptions
		want     string // "" for no error, else part of the error
	}{
		{"none", nil, true, ""},
		{"hostile but short", map[string]string{"method": "$(touch x); rm -rf /", "nl": "a\nb", "dir": "--output-dir=/etc"}, true, ""},
		{"JSON one byte under the limit", optionsOfJSONLen(t, runner.MaxOptionsJSONBytes-1), true, ""},
		{"JSON at the limit", optionsOfJSONLen(t, runner.MaxOptionsJSONBytes), true, ""},
		{"JSON one byte over the limit", optionsOfJSONLen(t, runner.MaxOptionsJSONBytes+1), true, "RECON_OPTIONS_JSON"},
		{"32 KiB of control characters", atTotalCap, true, "RECON_OPTIONS_JSON"},
		{"bytes that are not UTF-8", notUTF8, false, "RECON_OPTIONS_JSON"},
		{"32 KiB of plain text", plainMax, true, ""},
		{"bad key", map[string]string{"a-b": "1"}, false, `option key "a-b"`},
		{"NUL value", map[string]string{"k": "a\x00b"}, false, "NUL"},
		{"long value", map[string]string{"k": strings.Repeat("v", runner.MaxOptionValueBytes+1)}, false, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := protocol.ValidateOptions(tt.opts); (err == nil) != tt.protocol {
				t.Errorf("protocol.ValidateOptions = %v, want valid %v", err, tt.protocol)
			}
			env, err := runner.OptionsEnv(tt.opts)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("OptionsEnv = %d strings, %v; want error containing %q", len(env), err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("OptionsEnv: %v", err)
			}
			if len(env) != 1+len(tt.opts) {
				t.Fatalf("OptionsEnv gave %d strings, want %d", len(env), 1+len(tt.opts))
			}
			js, ok := strings.CutPrefix(env[0], "RECON_OPTIONS_JSON=")
			if !ok {
				t.Fatalf("first string %.40q, want RECON_OPTIONS_JSON=", env[0])
			}
			var back map[string]string
			if err := json.Unmarshal([]byte(js), &back); err != nil || len(back) != len(tt.opts) {
				t.Errorf("RECON_OPTIONS_JSON does not decode to the options: %v", err)
			}
			for _, kv := range env {
				if len(kv)+1 > runner.MaxEnvStringBytes {
					t.Errorf("%.30q... is %d bytes with its NUL, over %d", kv, len(kv)+1, runner.MaxEnvStringBytes)
				}
			}
			for _, kv := range env[1:] {
				k, v, _ := strings.Cut(strings.TrimPrefix(kv, "RECON_OPT_"), "=")
				found := false
				for ok, ov := range tt.opts {
					if strings.ToUpper(ok) == k {
						found = true
						if ov != v {
							t.Errorf("RECON_OPT_%s = %.40q, want %.40q", k, v, ov)
						}
					}
				}
				if !found {
					t.Errorf("unexpected variable %.60q", kv)
				}
			}
		})
	}
}

// TestRunOptionsAtEnvLimit runs a script with RECON_OPTIONS_JSON at the
// largest size OptionsEnv accepts: exec takes it, and the script sees it
// whole. One byte more is refused before exec.
func TestRunOptionsAtEnvLimit(t *testing.T) {
	t.Parallel()
	in, out := jobDirs(t)
	script := writeScript(t, `printf '%s' "${#RECON_OPTIONS_JSON}" > "$3/len"`+"\n")
	opts := optionsOfJSONLen(t, runner.MaxOptionsJSONBytes)
	res, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in, OutputDir: out, Options: opts})
	if err != nil || !res.Success() {
		t.Fatalf("Run with RECON_OPTIONS_JSON of %d bytes = %+v, %v; want success", runner.MaxOptionsJSONBytes, res, err)
	}
	b, err := os.ReadFile(filepath.Join(out, "len"))
	if err != nil {
		t.Fatal(err)
	}
	// bash counts characters; the JSON is ASCII.
	if n, _ := strconv.Atoi(string(b)); n != runner.MaxOptionsJSONBytes {
		t.Errorf("the script saw RECON_OPTIONS_JSON of %s bytes, want %d", b, runner.MaxOptionsJSONBytes)
	}
	in2, out2 := jobDirs(t)
	over := optionsOfJSONLen(t, runner.MaxOptionsJSONBytes+1)
	if res, err := runner.Run(context.Background(), runner.Spec{Script: script, InputDir: in2, OutputDir: out2, Options: over}); err == nil || !strings.Contains(err.Error(), "RECON_OPTIONS_JSON") {
		t.Errorf("Run one byte over = %+v, %v; want an error naming RECON_OPTIONS_JSON", res, err)
	}
}
