// Package allowlist parses and checks IP allow-lists (TRUSTED_IPS,
// TRUSTED_CLIENT_IPS): comma-separated addresses and CIDR prefixes, IPv4 and
// IPv6. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are treated as the IPv4
// address they carry, both in the list and in the addresses checked.
package allowlist

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Limits on the text Parse accepts.
const (
	MaxEntries  = 4096
	MaxEntryLen = 64
)

// List is a parsed allow-list. A nil *List allows every address.
type List struct {
	prefixes []netip.Prefix
	text     []string
}

// Parse reads a comma-separated list of IP addresses and CIDR prefixes. An
// empty or blank string gives a nil list, which allows everything. Zones
// (fe80::1%eth0) are rejected: an allow-list names hosts, not interfaces.
func Parse(s string) (*List, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxEntries {
		return nil, fmt.Errorf("allow-list has %d entries; at most %d", len(parts), MaxEntries)
	}
	l := &List{}
	for i, part := range parts {
		e := strings.TrimSpace(part)
		if e == "" {
			return nil, fmt.Errorf("allow-list entry %d is empty", i+1)
		}
		if len(e) > MaxEntryLen {
			return nil, fmt.Errorf("allow-list entry %d is too long (%d bytes)", i+1, len(e))
		}
		p, err := parseEntry(e)
		if err != nil {
			return nil, fmt.Errorf("allow-list entry %q: %w", e, err)
		}
		l.prefixes = append(l.prefixes, p)
		l.text = append(l.text, p.String())
	}
	return l, nil
}

func parseEntry(e string) (netip.Prefix, error) {
	if strings.Contains(e, "/") {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not an IP address or CIDR prefix")
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("zones are not allowed")
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return netip.Prefix{}, fmt.Errorf("an IPv4-mapped prefix needs at least /96")
			}
			a, bits = a.Unmap(), bits-96
		}
		return netip.PrefixFrom(a, bits).Masked(), nil
	}
	a, err := netip.ParseAddr(e)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an IP address or CIDR prefix")
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zones are not allowed")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Allows reports whether addr is on the list. A nil list allows everything;
// an invalid address is never allowed by a non-nil list.
func (l *List) Allows(addr netip.Addr) bool {
	if l == nil {
		return true
	}
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range l.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// AllowsAddr checks a net.Addr as returned by net.Conn.RemoteAddr. Addresses
// that are not TCP or UDP are refused by a non-nil list.
func (l *List) AllowsAddr(a net.Addr) bool {
	if l == nil {
		return true
	}
	switch a := a.(type) {
	case *net.TCPAddr:
		return l.Allows(a.AddrPort().Addr())
	case *net.UDPAddr:
		return l.Allows(a.AddrPort().Addr())
	}
	if a == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	return l.Allows(ap.Addr())
}

// String returns the list in canonical form ("" for a nil list).
func (l *List) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.text, ",")
}
