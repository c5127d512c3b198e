package keys

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Keys printed by Python's Fernet.generate_key(), i.e.
// base64.urlsafe_b64encode(os.urandom(32)).
var fernetKeys = []string{
	"Q34Ii6mSnd9sBoi3Hk6ZM7upyECvsA4v3DRP-_-fp10=",
	"irPZqX9t8QA4ZpwPLLzDW9JtPu2xezC0EgAb1rNScaQ=",
	"No7PZrFEuePZrmOW_zComsvndsvikxN5K0ePHQNe08g=",
	"JcS8WUvOQgjkIRADqa-7oY9-Rs1PHPbg34F0PVkyCNw=",
}

func TestParse(t *testing.T) {
	k0 := fernetKeys[0]
	std := strings.NewReplacer("-", "+", "_", "/").Replace(k0)
	zero := base64.URLEncoding.EncodeToString(make([]byte, 32))
	b31 := base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 31))
	b33 := base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 33))
	tests := []struct {
		in      string
		want    string // canonical encoding when accepted
		wantErr error
	}{
		{in: fernetKeys[0], want: fernetKeys[0]},
		{in: fernetKeys[1], want: fernetKeys[1]},
		{in: fernetKeys[2], want: fernetKeys[2]},
		{in: fernetKeys[3], want: fernetKeys[3]},
		{in: k0 + "\n", want: k0},
		{in: "  " + k0 + " \t\r\n", want: k0},
		{in: std, want: k0},                         // standard alphabet: + and /
		{in: strings.TrimRight(k0, "="), want: k0},  // no padding
		{in: strings.TrimRight(std, "="), want: k0}, // standard alphabet, no padding
		{in: k0 + "==", want: k0},                   // extra padding is trimmed
		{in: "", wantErr: ErrEmpty},
		{in: "   \n", wantErr: ErrEmpty},
		{in: "SET_YOUR_SHARED_KEY_HERE", wantErr: ErrPlaceholder},
		{in: "SET_YOUR_SERVER_ADMIN_KEY_HERE", wantErr: ErrPlaceholder},
		{in: " set_your_relay_admin_key_here ", wantErr: ErrPlaceholder},
		{in: zero, wantErr: ErrAllZero},
		{in: b31, wantErr: ErrInvalid},
		{in: b33, wantErr: ErrInvalid},
		{in: "not a key at all", wantErr: ErrInvalid},
		{in: k0[:43] + "!", wantErr: ErrInvalid},
		{in: k0[:20] + " " + k0[20:], wantErr: ErrInvalid},
		{in: strings.Repeat("A", 10000), wantErr: ErrInvalid},
		{in: "Q34Ii6mSnd9sBoi3Hk6ZM7upyECvsA4v3DRP-_-fp11=", wantErr: ErrInvalid}, // non-zero trailing bits
	}
	for _, tt := range tests {
		k, err := Parse(tt.in)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if err != nil && len(tt.in) > 8 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
				t.Errorf("Parse(%q) error %q contains the input", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) = %v, want %s", tt.in, err, tt.want)
			continue
		}
		if got := k.Encode(); got != tt.want {
			t.Errorf("Parse(%q).Encode() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		s := k.Encode()
		if len(s) != EncodedLen || !strings.HasSuffix(s, "=") || strings.ContainsAny(s, "+/") {
			t.Fatalf("Encode() = %q, want 44 url-safe characters with padding", s)
		}
		if seen[s] {
			t.Fatalf("Generate returned %q twice", s)
		}
		seen[s] = true
		back, err := Parse(s)
		if err != nil || !back.Equal(k) {
			t.Fatalf("Parse(Encode()) = %v, %v; want the same key", back, err)
		}
	}
}

func TestRedacted(t *testing.T) {
	k, err := Parse(fernetKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	secret := fernetKeys[0][:20]
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "key", k)
	js, _ := json.Marshal(struct{ K Key }{k})
	outs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %q", k, k, k, k, k, k),
		fmt.Sprintf("%v", struct{ K Key }{k}), logBuf.String(), string(js),
	}
	for _, o := range outs {
		if strings.Contains(o, secret) || !strings.Contains(o, "REDACTED") {
			t.Errorf("key printed as %q; want REDACTED only", o)
		}
	}
}

func TestEqualAndZero(t *testing.T) {
	a, _ := Parse(fernetKeys[0])
	b, _ := Parse(fernetKeys[1])
	a2, _ := Parse(fernetKeys[0])
	if !a.Equal(a2) || a.Equal(b) {
		t.Error("Equal gives wrong answers")
	}
	var z Key
	if !z.IsZero() || a.IsZero() || z.Equal(a) {
		t.Error("zero key handling is wrong")
	}
	// Bytes returns a copy.
	bs := a.Bytes()
	bs[0] ^= 0xff
	if !a.Equal(a2) {
		t.Error("Bytes() exposed the key's storage")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range fernetKeys {
		f.Add(s)
	}
	f.Add("")
	f.Add("SET_YOUR_SHARED_KEY_HERE")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			if len(s) >= 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q contains the input", err)
			}
			return
		}
		if len(k.Bytes()) != Size {
			t.Fatalf("accepted key of %d bytes", len(k.Bytes()))
		}
		k2, err := Parse(k.Encode())
		if err != nil || !k2.Equal(k) {
			t.Fatalf("canonical form of an accepted key does not parse back: %v", err)
		}
	})
}
