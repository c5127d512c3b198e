package secure

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/flynn/noise"
	"github.com/recon-mri/recon/internal/keys"
)

// Dial connects to addr over TCP and runs the client handshake (see Client).
// The TCP connect is bounded by ctx and by the handshake timeout. On failure
// the TCP connection is closed.
func Dial(ctx context.Context, addr string, cfg Config) (*Conn, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: cfg.handshakeTimeout()}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return Client(ctx, conn, cfg)
}

// Client runs the client side of the handshake on conn: it sends the
// preamble and the first Noise message, reads the server's answer, and sends
// the hello record that authenticates it to the server.
//
// The handshake is bounded by cfg.HandshakeTimeout and by ctx; conn's
// deadlines are used for that and cleared afterwards. If the server does not
// accept the key or the role (or refuses the address) the error wraps
// ErrAuth. On any failure Client closes conn; on success the returned Conn
// owns it.
func Client(ctx context.Context, conn net.Conn, cfg Config) (*Conn, error) {
	c, err := clientHandshake(ctx, conn, &cfg)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("secure handshake with %s: %w", conn.RemoteAddr(), err)
	}
	return c, nil
}

// Server runs the server side of the handshake on conn. It returns only once
// the client has proved the key of cfg.Role: its preamble names cfg.Role, its
// first Noise message decrypts with that role's PSK, and its hello record
// decrypts with the session keys. A client that fails before the last step
// gets no answer at all.
//
// The handshake is bounded by cfg.HandshakeTimeout and by ctx; conn's
// deadlines are used for that and cleared afterwards. An error for a wrong key
// wraps ErrAuth, one for a wrong magic, version or role wraps ErrPreamble. On
// any failure Server closes conn; on success the returned Conn owns it.
func Server(ctx context.Context, conn net.Conn, cfg Config) (*Conn, error) {
	c, err := serverHandshake(ctx, conn, &cfg)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("secure handshake with %s: %w", conn.RemoteAddr(), err)
	}
	return c, nil
}

func clientHandshake(ctx context.Context, conn net.Conn, cfg *Config) (*Conn, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	hs, err := newHandshake(cfg, true)
	if err != nil {
		return nil, err
	}
	g, err := startGuard(ctx, conn, cfg.handshakeTimeout())
	if err != nil {
		return nil, err
	}
	defer g.stop()

	// Preamble, length and first message go out in one write.
	var out [PreambleSize + lengthSize + handshakeMessageSize]byte
	pre := preamble(cfg.Role, hs.keyID)
	copy(out[:], pre[:])
	binary.BigEndian.PutUint16(out[PreambleSize:], handshakeMessageSize)
	msg, _, _, err := hs.WriteMessage(out[PreambleSize+lengthSize:PreambleSize+lengthSize], nil)
	if err != nil {
		return nil, fmt.Errorf("write first handshake message: %w", err)
	}
	if len(msg) != handshakeMessageSize {
		return nil, fmt.Errorf("write first handshake message: unexpected size %d", len(msg))
	}
	copy(out[PreambleSize+lengthSize:], msg) // a no-op unless noise reallocated
	if _, err := conn.Write(out[:]); err != nil {
		return nil, g.clientErr(err)
	}

	// The server answers only if it accepted the first message. A
	// connection closed or reset here is ErrClosedUnanswered; an answer that
	// is not a valid second message wraps ErrAuth. A server of another
	// protocol version answers with its version instead (versionRefusal).
	var in [lengthSize + handshakeMessageSize]byte
	if _, err := io.ReadFull(conn, in[:lengthSize]); err != nil {
		return nil, g.clientErr(err)
	}
	if string(in[:lengthSize]) == magic[:lengthSize] {
		var rest [versionRefusalSize - lengthSize]byte
		if _, err := io.ReadFull(conn, rest[:]); err != nil || string(rest[:len(magic)-lengthSize]) != magic[lengthSize:] {
			return nil, fmt.Errorf("%w: the server's answer has a wrong length", ErrAuth)
		}
		return nil, fmt.Errorf("%w: the server speaks recon protocol version %d, this client version %d: "+
			"upgrade the older of the two", ErrVersion, rest[len(rest)-1], ProtocolVersion)
	}
	if binary.BigEndian.Uint16(in[:]) != handshakeMessageSize {
		return nil, fmt.Errorf("%w: the server's answer has a wrong length", ErrAuth)
	}
	if _, err := io.ReadFull(conn, in[lengthSize:]); err != nil {
		return nil, g.clientErr(err)
	}
	_, send, recv, err := hs.ReadMessage(nil, in[lengthSize:])
	if err != nil || send == nil || recv == nil {
		return nil, fmt.Errorf("%w: the server's answer does not decrypt with this key", ErrAuth)
	}

	hello, err := appendRecord(make([]byte, 0, lengthSize+minRecordSize), send, recordHello, nil)
	if err != nil {
		return nil, fmt.Errorf("seal hello record: %w", err)
	}
	if _, err := conn.Write(hello); err != nil {
		return nil, g.clientErr(err)
	}
	if err := g.finish(); err != nil {
		return nil, err
	}
	c := newConn(conn, cfg, send, recv)
	c.keyID = hs.keyID
	return c, nil
}

func serverHandshake(ctx context.Context, conn net.Conn, cfg *Config) (*Conn, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	g, err := startGuard(ctx, conn, cfg.handshakeTimeout())
	if err != nil {
		return nil, err
	}
	defer g.stop()

	var pre [PreambleSize]byte
	if _, err := io.ReadFull(conn, pre[:preambleHeadSize]); err != nil {
		return nil, fmt.Errorf("read preamble: %w", g.ioErr(err))
	}
	if err := checkPreamble(pre, cfg.Role); err != nil {
		return nil, err
	}
	kr := cfg.Keys
	if kr == nil {
		if kr, err = NewKeyring(cfg.Role, []NamedKey{{Key: cfg.Key, V1: true}}); err != nil {
			return nil, err
		}
	}
	var hs *handshake
	switch v := pre[len(magic)]; {
	case v == ProtocolVersion:
		if _, err := io.ReadFull(conn, pre[preambleHeadSize:]); err != nil {
			return nil, fmt.Errorf("read preamble: %w", g.ioErr(err))
		}
		// An unknown key id gets a key nobody holds: the first message
		// fails below exactly as it does for a wrong key.
		rk := kr.lookup(KeyID(pre[preambleHeadSize:]))
		hs, err = newHandshakeState(cfg, false, rk.psk, pre[:])
		if err == nil {
			hs.keyName, hs.keyID = rk.name, rk.id
		}
	case v == 1 && kr.v1() != nil:
		// A client of version 1 may finish its handshake with the one
		// key it can have (SHARED_KEY), only to be told to upgrade.
		rk := kr.v1()
		hs, err = newHandshakeState(cfg, false, rk.psk1, pre[:preambleHeadSize])
		if err == nil {
			hs.keyName, hs.keyID, hs.old = rk.name, rk.id, true
		}
	default:
		refuse := [versionRefusalSize]byte{magic[0], magic[1], magic[2], magic[3], ProtocolVersion}
		_, _ = conn.Write(refuse[:])
		return nil, fmt.Errorf("%w: protocol version %d, want %d", ErrPreamble, v, ProtocolVersion)
	}
	if err != nil {
		return nil, err
	}
	var in [lengthSize + handshakeMessageSize]byte
	if _, err := io.ReadFull(conn, in[:lengthSize]); err != nil {
		return nil, fmt.Errorf("read first handshake message: %w", g.ioErr(err))
	}
	if n := binary.BigEndian.Uint16(in[:]); n != handshakeMessageSize {
		return nil, fmt.Errorf("first handshake message has length %d, want %d: %w", n, handshakeMessageSize, ErrAuth)
	}
	if _, err := io.ReadFull(conn, in[lengthSize:]); err != nil {
		return nil, fmt.Errorf("read first handshake message: %w", g.ioErr(err))
	}
	// With a wrong PSK (wrong key or role) the empty payload's tag fails
	// here, before any Diffie-Hellman work, and nothing is sent back.
	if _, _, _, err := hs.ReadMessage(nil, in[lengthSize:]); err != nil {
		return nil, fmt.Errorf("first handshake message: %w", ErrAuth)
	}

	var out [lengthSize + handshakeMessageSize]byte
	binary.BigEndian.PutUint16(out[:], handshakeMessageSize)
	msg, recv, send, err := hs.WriteMessage(out[lengthSize:lengthSize], nil)
	if err != nil {
		return nil, fmt.Errorf("write second handshake message: %w", err)
	}
	if recv == nil || send == nil || len(msg) != handshakeMessageSize {
		return nil, errors.New("write second handshake message: handshake did not complete")
	}
	copy(out[lengthSize:], msg) // a no-op unless noise reallocated
	if _, err := conn.Write(out[:]); err != nil {
		return nil, fmt.Errorf("write second handshake message: %w", g.ioErr(err))
	}

	// The hello record is the first one sealed with the session keys, which
	// depend on this connection's fresh ephemeral key: only a client that
	// holds the PSK and took part in this handshake can produce it.
	var hello [lengthSize + minRecordSize]byte
	if _, err := io.ReadFull(conn, hello[:lengthSize]); err != nil {
		return nil, fmt.Errorf("read hello record: %w", g.ioErr(err))
	}
	if n := binary.BigEndian.Uint16(hello[:]); n != minRecordSize {
		return nil, fmt.Errorf("hello record has length %d, want %d: %w", n, minRecordSize, ErrAuth)
	}
	if _, err := io.ReadFull(conn, hello[lengthSize:]); err != nil {
		return nil, fmt.Errorf("read hello record: %w", g.ioErr(err))
	}
	pt, err := recv.Decrypt(hello[lengthSize:lengthSize], nil, hello[lengthSize:])
	if err != nil {
		return nil, fmt.Errorf("hello record: %w", ErrAuth)
	}
	if len(pt) != 1 || pt[0] != recordHello {
		return nil, fmt.Errorf("first record is not a hello: %w", ErrRecord)
	}
	if err := g.finish(); err != nil {
		return nil, err
	}
	c := newConn(conn, cfg, send, recv)
	c.keyName, c.keyID, c.old = hs.keyName, hs.keyID, hs.old
	return c, nil
}

// preamble returns the cleartext preamble (and Noise prologue) for role r
// and key id.
func preamble(r Role, id KeyID) [PreambleSize]byte {
	p := [PreambleSize]byte{magic[0], magic[1], magic[2], magic[3], ProtocolVersion, byte(r)}
	copy(p[preambleHeadSize:], id[:])
	return p
}

// checkPreamble checks the head of a preamble (magic, version, role). A
// known older or newer version passes: serverHandshake answers it.
func checkPreamble(pre [PreambleSize]byte, want Role) error {
	if string(pre[:len(magic)]) != magic {
		return fmt.Errorf("%w: not a recon client", ErrPreamble)
	}
	if v := pre[len(magic)]; v == 0 {
		return fmt.Errorf("%w: protocol version 0", ErrPreamble)
	}
	if r := Role(pre[len(magic)+1]); r != want {
		return fmt.Errorf("%w: client asked for the %s role on a %s listener", ErrPreamble, r, want)
	}
	return nil
}

// derivePSK derives the Noise PSK of role r from key k for protocol
// version v. The raw key never enters Noise, and each role (and protocol
// version) gets its own PSK.
func derivePSK(k keys.Key, r Role, v int) ([]byte, error) {
	secret := k.Bytes()
	defer clear(secret)
	psk, err := hkdf.Key(sha256.New, secret, nil, fmt.Sprintf("recon/%d psk %s", v, r), 32)
	if err != nil {
		return nil, fmt.Errorf("derive psk: %w", err)
	}
	return psk, nil
}

// handshake is a Noise handshake with what the preamble said of the key.
type handshake struct {
	*noise.HandshakeState
	keyID   KeyID
	keyName string // server: the name of the key the preamble's id named
	old     bool   // server: the client speaks protocol version 1
}

// newHandshake starts the client's handshake with cfg.Key.
func newHandshake(cfg *Config, initiator bool) (*handshake, error) {
	psk, err := derivePSK(cfg.Key, cfg.Role, ProtocolVersion)
	if err != nil {
		return nil, err
	}
	defer clear(psk) // noise keeps its own copy
	id, err := DeriveKeyID(cfg.Key, cfg.Role)
	if err != nil {
		return nil, err
	}
	pre := preamble(cfg.Role, id)
	hs, err := newHandshakeState(cfg, initiator, psk, pre[:])
	if err != nil {
		return nil, err
	}
	hs.keyID = id
	return hs, nil
}

func newHandshakeState(cfg *Config, initiator bool, psk, prologue []byte) (*handshake, error) {
	suite := cfg.suite
	if suite == nil {
		suite = suiteAESGCM
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           suite,
		Random:                cfg.random,
		Pattern:               noise.HandshakeNN,
		Initiator:             initiator,
		Prologue:              prologue,
		PresharedKey:          psk,
		PresharedKeyPlacement: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("start handshake: %w", err)
	}
	return &handshake{HandshakeState: hs}, nil
}

// guard bounds a handshake by its timeout and by a context, through the
// connection's deadlines.
type guard struct {
	ctx      context.Context
	conn     net.Conn
	timeout  time.Duration
	ctxBound bool // ctx's deadline comes before the handshake timeout
	stop     func() bool
}

func startGuard(ctx context.Context, conn net.Conn, timeout time.Duration) (*guard, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g := &guard{ctx: ctx, conn: conn, timeout: timeout}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
		deadline, g.ctxBound = d, true
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set handshake deadline: %w", err)
	}
	// Cancelling ctx moves the deadline into the past, which wakes any
	// blocked Read or Write.
	g.stop = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return g, nil
}

// finish ends the guard and clears the deadlines. If ctx was cancelled in
// the meantime its error is returned.
func (g *guard) finish() error {
	if !g.stop() {
		return g.ctx.Err()
	}
	if err := g.conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear handshake deadline: %w", err)
	}
	return nil
}

// ioErr explains an I/O error of the handshake: the context's error if it
// was cancelled, a timeout if the handshake took too long, else err itself.
func (g *guard) ioErr(err error) error {
	if e := g.stopped(err); e != nil {
		return e
	}
	return err
}

// clientErr is ioErr for the client, which reports a peer that hung up or
// reset the connection as ErrAuth: that is how a server refuses.
func (g *guard) clientErr(err error) error {
	if e := g.stopped(err); e != nil {
		return e
	}
	if peerHungUp(err) {
		return ErrClosedUnanswered
	}
	return err
}

// stopped returns the error to report if err came from the context or the
// handshake deadline, and nil otherwise.
func (g *guard) stopped(err error) error {
	if ctxErr := g.ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		if g.ctxBound {
			return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
		return fmt.Errorf("handshake not done within %v: %w", g.timeout, err)
	}
	return nil
}

func peerHungUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, io.ErrClosedPipe)
}
