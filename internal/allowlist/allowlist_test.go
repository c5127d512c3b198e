package allowlist

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestParseAndAllows(t *testing.T) {
	tests := []struct {
		list    string
		allow   []string
		deny    []string
		wantErr string
	}{
		{list: "", allow: []string{"127.0.0.1", "::1", "10.1.2.3"}},
		{list: "   ", allow: []string{"8.8.8.8"}},
		{list: "127.0.0.1,::1", allow: []string{"127.0.0.1", "::1", "::ffff:127.0.0.1"}, deny: []string{"127.0.0.2", "::2", "10.0.0.1"}},
		{list: " 127.0.0.1 , ::1 ", allow: []string{"127.0.0.1", "::1"}},
		{list: "192.168.1.0/24", allow: []string{"192.168.1.0", "192.168.1.255", "::ffff:192.168.1.7"}, deny: []string{"192.168.2.1", "::1"}},
		{list: "192.168.1.77/24", allow: []string{"192.168.1.1"}, deny: []string{"192.168.0.1"}},
		{list: "2001:db8::/32", allow: []string{"2001:db8::1", "2001:db8:ffff::1"}, deny: []string{"2001:db9::1", "127.0.0.1"}},
		{list: "::ffff:10.0.0.1", allow: []string{"10.0.0.1", "::ffff:10.0.0.1"}, deny: []string{"10.0.0.2"}},
		{list: "::ffff:10.0.0.0/104", allow: []string{"10.255.0.1"}, deny: []string{"11.0.0.1"}},
		{list: "0.0.0.0/0", allow: []string{"1.2.3.4", "::ffff:1.2.3.4"}, deny: []string{"::1"}},
		{list: "127.0.0.0/8", allow: []string{"127.0.0.2", "127.255.255.255"}, deny: []string{"128.0.0.1"}},
		{list: "localhost", wantErr: "not an IP address"},
		{list: "127.0.0.1,,::1", wantErr: "entry 2 is empty"},
		{list: "127.0.0.1,", wantErr: "entry 2 is empty"},
		{list: "300.1.1.1", wantErr: "not an IP address"},
		{list: "10.0.0.0/33", wantErr: "not an IP address"},
		{list: "10.0.0.0/", wantErr: "not an IP address"},
		{list: "fe80::1%eth0", wantErr: "zones"},
		{list: "::ffff:10.0.0.0/8", wantErr: "at least /96"},
		{list: "1.2.3.4 5.6.7.8", wantErr: "not an IP address"},
		{list: strings.Repeat("1", 100), wantErr: "too long"},
	}
	for _, tt := range tests {
		l, err := Parse(tt.list)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want it to contain %q", tt.list, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) = %v, want no error", tt.list, err)
			continue
		}
		for _, a := range tt.allow {
			if !l.Allows(netip.MustParseAddr(a)) {
				t.Errorf("Parse(%q).Allows(%s) = false, want true", tt.list, a)
			}
		}
		for _, a := range tt.deny {
			if l.Allows(netip.MustParseAddr(a)) {
				t.Errorf("Parse(%q).Allows(%s) = true, want false", tt.list, a)
			}
		}
	}
}

func TestTooManyEntries(t *testing.T) {
	s := strings.Repeat("127.0.0.1,", MaxEntries) + "127.0.0.1"
	if _, err := Parse(s); err == nil {
		t.Fatalf("Parse of %d entries succeeded, want error", MaxEntries+1)
	}
}

func TestAllowsAddr(t *testing.T) {
	l, err := Parse("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5}, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 5}, true},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1).To16(), Port: 5}, true},
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.2"), Port: 5}, false},
		{&net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5}, true},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, false},
		{nil, false},
	}
	for _, c := range cases {
		if got := l.AllowsAddr(c.addr); got != c.want {
			t.Errorf("AllowsAddr(%v) = %v, want %v", c.addr, got, c.want)
		}
	}
	var none *List
	if !none.AllowsAddr(&net.TCPAddr{IP: net.ParseIP("10.0.0.1")}) {
		t.Error("nil list must allow everything")
	}
}

func TestString(t *testing.T) {
	l, err := Parse(" 10.0.0.7/8 ,::1,::ffff:1.2.3.4")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.String(), "10.0.0.0/8,::1/128,1.2.3.4/32"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	var none *List
	if none.String() != "" {
		t.Errorf("nil String() = %q", none.String())
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "127.0.0.1,::1", "10.0.0.0/8", "::ffff:1.2.3.4/120", "fe80::1%eth0", "a,b", "1.2.3.4/33"} {
		f.Add(s, "127.0.0.1")
	}
	f.Fuzz(func(t *testing.T, list, addr string) {
		l, err := Parse(list)
		if err != nil {
			return
		}
		// The canonical form parses to a list that decides the same way.
		l2, err := Parse(l.String())
		if err != nil {
			t.Fatalf("Parse(%q) ok but its String %q fails: %v", list, l.String(), err)
		}
		if a, err := netip.ParseAddr(addr); err == nil {
			if l.Allows(a) != l2.Allows(a) {
				t.Fatalf("list %q and its canonical form %q disagree on %s", list, l.String(), addr)
			}
			if l.Allows(a) != l.Allows(a.Unmap()) {
				t.Fatalf("list %q treats %s and its unmapped form differently", list, addr)
			}
		}
	})
}
