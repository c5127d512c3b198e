package protocol

import (
	"strings"
	"testing"
)

func TestHelloCheck(t *testing.T) {
	tests := []struct {
		hashes []string
		ok     bool
	}{
		{[]string{"blake3", "sha256"}, true},
		{[]string{"sha256"}, true},
		{[]string{"xxh3-128", "sha256"}, true}, // unknown names are allowed
		{nil, false},
		{[]string{}, false},
		{[]string{""}, false},
		{[]string{"SHA256"}, false},
		{[]string{"sha 256"}, false},
		{[]string{"sha256\x00"}, false},
		{[]string{strings.Repeat("a", MaxHashNameLen)}, true},
		{[]string{strings.Repeat("a", MaxHashNameLen+1)}, false},
		{make([]string, MaxHelloHashes+1), false},
	}
	for _, tt := range tests {
		h := Hello{Hashes: tt.hashes}
		if err := h.Check(); (err == nil) != tt.ok {
			t.Errorf("Check(%q) = %v, want ok %v", tt.hashes, err, tt.ok)
		}
	}
}

func TestChooseHash(t *testing.T) {
	tests := []struct {
		offered []string
		want    string
	}{
		{[]string{"blake3", "sha256"}, HashBLAKE3},
		{[]string{"sha256", "blake3"}, HashSHA256},
		{[]string{"k12", "blake3"}, HashBLAKE3},
		{[]string{"k12"}, HashSHA256}, // SHA-256 is always there
		{nil, HashSHA256},
	}
	for _, tt := range tests {
		if got := ChooseHash(tt.offered); got != tt.want {
			t.Errorf("ChooseHash(%q) = %q, want %q", tt.offered, got, tt.want)
		}
	}
}

// TestHashVectors pins both end-to-end hashes to published values: the
// BLAKE3 ones are those of the BLAKE3 reference (32-byte output), quoted
// in docs/PROTOCOL.md.
func TestHashVectors(t *testing.T) {
	tests := []struct{ hash, in, want string }{
		{HashSHA256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{HashSHA256, "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{HashBLAKE3, "", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{HashBLAKE3, "abc", "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"},
	}
	for _, tt := range tests {
		h := NewHash(tt.hash)
		h.Write([]byte(tt.in))
		if got := HexSum(h); got != tt.want {
			t.Errorf("%s(%q) = %s, want %s", tt.hash, tt.in, got, tt.want)
		}
	}
}

func TestFileDoneDigest(t *testing.T) {
	const d = zeroHash
	tests := []struct {
		done FileDone
		hash string
		ok   bool
	}{
		{NewFileDone(HashSHA256, d), HashSHA256, true},
		{NewFileDone(HashBLAKE3, d), HashBLAKE3, true},
		{NewFileDone(HashSHA256, d), HashBLAKE3, false}, // the other hash
		{NewFileDone(HashBLAKE3, d), HashSHA256, false},
		{FileDone{SHA256: d, BLAKE3: d}, HashBLAKE3, false}, // both
		{FileDone{SHA256: d, BLAKE3: d}, HashSHA256, false},
		{FileDone{}, HashSHA256, false},
		{FileDone{SHA256: d}, "k12", false},
	}
	for _, tt := range tests {
		got, ok := tt.done.Digest(tt.hash)
		if ok != tt.ok || ok && got != d {
			t.Errorf("%+v.Digest(%s) = %q, %v; want ok %v", tt.done, tt.hash, got, ok, tt.ok)
		}
	}
}
