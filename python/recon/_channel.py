"""The encrypted record stream of an open connection (docs/PROTOCOL.md,
"Records")."""

from __future__ import annotations

import socket
import struct
from typing import Optional

from . import _handshake, _noise

RECORD_DATA = 1
RECORD_CLOSE = 2
RECORD_HELLO = _handshake.RECORD_HELLO

MAX_PAYLOAD = 32 << 10
TAG_SIZE = 16
MIN_RECORD = 1 + TAG_SIZE
MAX_RECORD = MIN_RECORD + MAX_PAYLOAD
# Records are sent in batches of up to this many payload bytes per
# sendall, as the Go side does.
_WRITE_BATCH = 8 * MAX_PAYLOAD
_READ_BUFFER = 256 << 10


class ChannelError(Exception):
    """The connection broke: it ended without a close record, a record
    failed to authenticate or was malformed, or a read or write failed."""


class ChannelTimeout(ChannelError):
    """The peer sent nothing for the idle timeout (or a caller's deadline)."""


class Channel:
    """An authenticated, encrypted byte stream over a TCP socket."""

    def __init__(self, sock: socket.socket, send: _noise.CipherState, recv: _noise.CipherState) -> None:
        self._sock = sock
        self._send = send
        self._recv = recv
        self._rfile = sock.makefile("rb", buffering=_READ_BUFFER)
        self._plain = memoryview(b"")
        self._eof = False
        self._err: Optional[ChannelError] = None  # reading failed: sticks
        self._werr: Optional[ChannelError] = None  # writing failed: sticks
        self._wclosed = False
        #: Data records read so far: tells a session that the server had
        #: closed while it was idle (nothing but its close record read since
        #: the request) from one that broke in the middle of a reply.
        self.received = 0
        #: The session's end-to-end hash, once agreed by hello (or "sha256"
        #: on a server without hello); None before. At most one hello per
        #: session, before its first transfer.
        self.hash: Optional[str] = None

    @classmethod
    def connect(cls, host: str, port: int, key: bytes, timeout: float, idle_timeout: float) -> "Channel":
        """Connect over TCP and run the handshake, both bounded by timeout.
        Reads then wait at most idle_timeout for the peer."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            send, recv = _handshake.client_handshake(sock, key)
            sock.settimeout(idle_timeout)
        except BaseException:
            sock.close()
            raise
        return cls(sock, send, recv)

    def settimeout(self, t: Optional[float]) -> None:
        self._sock.settimeout(t)

    def gettimeout(self) -> Optional[float]:
        return self._sock.gettimeout()

    # --- reading

    def _fail(self, err: ChannelError) -> ChannelError:
        self._err = err
        self.close()
        return err

    def _read_record(self) -> None:
        """Read and open the next record into self._plain (data) or set
        EOF (close)."""
        try:
            hdr = self._rfile.read(2)
            if len(hdr) == 2:
                n = struct.unpack(">H", hdr)[0]
                if n < MIN_RECORD or n > MAX_RECORD:
                    raise self._fail(ChannelError("malformed record: length %d out of range" % n))
                ct = self._rfile.read(n)
            else:
                ct = b""
                n = 1
        except socket.timeout:
            # A timeout leaves the buffered reader in an unknown state:
            # the stream cannot be used again.
            raise self._fail(ChannelTimeout("no data from the server for %s s" % self._sock.gettimeout())) from None
        except OSError as e:
            raise self._fail(ChannelError("read: %s" % e)) from None
        if len(ct) != n:
            raise self._fail(ChannelError("the connection ended without a close record"))
        try:
            pt = self._recv.decrypt(b"", ct)
        except _noise.NoiseError:
            raise self._fail(ChannelError("a record failed authentication")) from None
        typ = pt[0]
        if typ == RECORD_DATA:
            self.received += 1
            self._plain = memoryview(pt)[1:]
        elif typ == RECORD_CLOSE and len(pt) == 1:
            self._eof = True
        else:
            raise self._fail(ChannelError("malformed record: type %d" % typ))

    def read(self, n: int) -> bytes:
        """Up to n bytes (at least one); b"" only after the peer's close
        record."""
        if self._err is not None:
            raise self._err
        while not self._plain:
            if self._eof:
                return b""
            self._read_record()
        out = self._plain[:n]
        self._plain = self._plain[len(out):]
        return bytes(out)

    def read_exact(self, n: int) -> bytes:
        """Exactly n bytes; ChannelError if the stream ends first."""
        parts = []
        left = n
        while left:
            b = self.read(min(left, 1 << 20))
            if not b:
                raise ChannelError("the server ended the stream %d bytes early" % left)
            parts.append(b)
            left -= len(b)
        return b"".join(parts)

    # --- writing

    def write(self, data: "bytes | bytearray | memoryview") -> None:
        """Send data as records of at most MAX_PAYLOAD bytes, several
        records to a system call."""
        if self._werr is not None:
            raise self._werr
        if self._wclosed:
            raise ChannelError("write after close")
        mv = memoryview(data)
        while mv:
            batch = mv[:_WRITE_BATCH]
            mv = mv[len(batch):]
            out = []
            for i in range(0, len(batch), MAX_PAYLOAD):
                ct = self._send.encrypt(b"", b"\x01" + batch[i:i + MAX_PAYLOAD])
                out.append(struct.pack(">H", len(ct)))
                out.append(ct)
            self._sendv(out)

    def _sendv(self, bufs: "list[bytes]") -> None:
        """Send the buffers in order: with sendmsg (no copy into one
        buffer) where the platform has it."""
        if not hasattr(self._sock, "sendmsg"):
            self._sendall(b"".join(bufs))
            return
        views = [memoryview(b) for b in bufs]
        try:
            while views:
                n = self._sock.sendmsg(views[:64])
                while n:
                    if n >= len(views[0]):
                        n -= len(views[0])
                        views.pop(0)
                    else:
                        views[0] = views[0][n:]
                        n = 0
        except socket.timeout:
            self._werr = ChannelTimeout("the server took nothing for %s s" % self._sock.gettimeout())
            raise self._werr from None
        except OSError as e:
            self._werr = ChannelError("write: %s" % e)
            raise self._werr from None

    def _sendall(self, b: bytes) -> None:
        # A failed write leaves reading possible: the server may have sent
        # an error before it stopped reading.
        try:
            self._sock.sendall(b)
        except socket.timeout:
            self._werr = ChannelTimeout("the server took nothing for %s s" % self._sock.gettimeout())
            raise self._werr from None
        except OSError as e:
            self._werr = ChannelError("write: %s" % e)
            raise self._werr from None

    def close_write(self) -> None:
        """Send the close record and half-close the socket."""
        if self._wclosed or self._werr is not None:
            return
        self._sendall(_handshake.seal_record(self._send, RECORD_CLOSE, b""))
        self._wclosed = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self._rfile.close()
        finally:
            self._sock.close()

    @property
    def broken(self) -> bool:
        return self._err is not None or self._werr is not None
