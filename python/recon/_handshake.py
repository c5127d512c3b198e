"""Opening a recon connection: preamble, key derivation and handshake.

Everything that happens before the first record is here and only here
(docs/PROTOCOL.md, "Opening a connection"): the cleartext preamble, the
PSK derived from the shared key, and the Noise NNpsk0 handshake with the
hello record that ends it. A change of the preamble or of the protocol
version changes this module alone.
"""

from __future__ import annotations

import base64
import binascii
import socket
import struct
from typing import Optional, Tuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import _noise

MAGIC = b"RCN\x00"
#: The channel's protocol version: the preamble's fifth byte and part of
#: every PSK's HKDF info. Application protocol 3 (_protocol.VERSION) still
#: runs over channel version 2.
VERSION = 2

#: Roles: what a listener serves. A client uses ROLE_CLIENT.
ROLE_CLIENT = 1
ROLE_ADMIN = 2
ROLE_RELAY_ADMIN = 3
ROLE_NAMES = {ROLE_CLIENT: "client", ROLE_ADMIN: "admin", ROLE_RELAY_ADMIN: "relay-admin"}

KEY_ID_SIZE = 16
PREAMBLE_SIZE = 6 + KEY_ID_SIZE  # 22
HANDSHAKE_MESSAGE_SIZE = _noise.DHLEN + _noise.TAGLEN  # 48
KEY_SIZE = 32

RECORD_HELLO = 3


class VersionMismatch(Exception):
    """The server speaks another protocol version: it answered the preamble
    with its own version instead of a handshake message."""

    def __init__(self, server_version: int) -> None:
        self.server_version = server_version
        super().__init__(
            "the server speaks recon protocol version %d, this client version %d: upgrade the older of the two"
            % (server_version, VERSION))


class HandshakeRefused(Exception):
    """The server closed the handshake without answering, or its answer
    did not authenticate: a wrong key or port, a refused address, or a
    busy server."""


def parse_key(key: "str | bytes") -> bytes:
    """The 32 bytes of a shared key: its text form as ``recon keygen``
    prints it (url-safe or standard base64, padding optional, surrounding
    white space ignored), or the raw 32 bytes. ValueError otherwise; the
    message never contains the key."""
    if isinstance(key, (bytes, bytearray)) and len(key) == KEY_SIZE:
        raw = bytes(key)
    else:
        if isinstance(key, (bytes, bytearray)):
            try:
                key = bytes(key).decode("ascii")
            except UnicodeDecodeError:
                raise ValueError("key is not valid: expected 32 bytes in base64") from None
        if not isinstance(key, str):
            raise TypeError("key must be a str or bytes")
        s = key.strip()
        if not s:
            raise ValueError("key is empty: generate one with `recon keygen`")
        up = s.upper()
        if up.startswith("SET_YOUR_") and up.endswith("_HERE"):
            raise ValueError("key is still a placeholder: generate one with `recon keygen`")
        s = s.rstrip("=").replace("+", "-").replace("/", "_")
        if len(s) != 43:
            raise ValueError("key is not valid: expected 32 bytes in base64 (44 characters, as printed by `recon keygen`)")
        try:
            raw = base64.urlsafe_b64decode(s + "=")
        except (binascii.Error, ValueError):
            raise ValueError("key is not valid: expected 32 bytes in base64") from None
        # Refuse non-canonical trailing bits, as Go's strict decoder does.
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != s:
            raise ValueError("key is not valid: expected 32 bytes in base64")
    if raw == b"\x00" * KEY_SIZE:
        raise ValueError("key is all zero bytes: generate a real one with `recon keygen`")
    return raw


def key_id_info(role: int = ROLE_CLIENT) -> bytes:
    return ("recon/%d key id %s" % (VERSION, ROLE_NAMES[role])).encode()


def derive_key_id(key: bytes, role: int = ROLE_CLIENT) -> bytes:
    """The key id: HKDF-SHA256 of the key, no salt, info "recon/2 key id
    <role>", 16 bytes. It travels in the clear so that a server with one key
    per client identity finds the key in one lookup; it reveals nothing of
    the key and never the identity's name."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_ID_SIZE, salt=None, info=key_id_info(role)).derive(key)


def preamble(role: int = ROLE_CLIENT, key_id: bytes = b"\x00" * KEY_ID_SIZE) -> bytes:
    """The 22-byte cleartext preamble, also the Noise prologue: magic,
    version, role and the key id."""
    if len(key_id) != KEY_ID_SIZE:
        raise ValueError("key id must be %d bytes" % KEY_ID_SIZE)
    return MAGIC + bytes([VERSION, role]) + bytes(key_id)


def psk_info(role: int = ROLE_CLIENT) -> bytes:
    return ("recon/%d psk %s" % (VERSION, ROLE_NAMES[role])).encode()


def derive_psk(key: bytes, role: int = ROLE_CLIENT) -> bytes:
    """HKDF-SHA256 of the key, no salt, info "recon/2 psk <role>"."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=psk_info(role)).derive(key)


def seal_record(cs: _noise.CipherState, typ: int, payload: bytes) -> bytes:
    """One record: 2-byte big-endian length, then the AEAD ciphertext of
    the type byte and the payload (empty associated data)."""
    ct = cs.encrypt(b"", bytes([typ]) + payload)
    return struct.pack(">H", len(ct)) + ct


class ClientHandshake:
    """The client's side of the handshake as bytes in and out, without a
    socket: first_flight(), then finish(server_reply) which returns the hello
    record to send and the transport cipher states."""

    def __init__(self, key: bytes, role: int = ROLE_CLIENT, ephemeral: Optional[bytes] = None) -> None:
        self.role = role
        self.preamble = preamble(role, derive_key_id(key, role))
        self._hs = _noise.NNpsk0Initiator(self.preamble, derive_psk(key, role), ephemeral)

    def first_flight(self) -> bytes:
        """Preamble, length and first Noise message: 72 bytes, one write."""
        msg = self._hs.write_message()
        return self.preamble + struct.pack(">H", len(msg)) + msg

    def finish(self, reply: bytes) -> Tuple[bytes, _noise.CipherState, _noise.CipherState]:
        """Check the server's 50-byte reply; return (hello record, send,
        receive). HandshakeRefused if it does not authenticate,
        VersionMismatch if the server answered with its protocol version."""
        if len(reply) >= 5 and reply[:4] == MAGIC:
            raise VersionMismatch(reply[4])
        if len(reply) != 2 + HANDSHAKE_MESSAGE_SIZE or struct.unpack(">H", reply[:2])[0] != HANDSHAKE_MESSAGE_SIZE:
            raise HandshakeRefused("the server's answer has a wrong length")
        try:
            send, recv = self._hs.read_message(reply[2:])
        except _noise.NoiseError:
            raise HandshakeRefused("the server's answer does not decrypt with this key") from None
        return seal_record(send, RECORD_HELLO, b""), send, recv


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def client_handshake(sock: socket.socket, key: bytes, role: int = ROLE_CLIENT) -> Tuple[_noise.CipherState, _noise.CipherState]:
    """Run the client handshake on a connected socket (its timeout bounds
    each step). Return the (send, receive) cipher states."""
    hs = ClientHandshake(key, role)
    try:
        sock.sendall(hs.first_flight())
        reply = _read_exact(sock, 2 + HANDSHAKE_MESSAGE_SIZE)
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        reply = b""
    if not reply:
        raise HandshakeRefused(
            "the server closed the connection without answering: the key is wrong, or the role (port), "
            "or this address is not allowed, or the server is busy")
    hello, send, recv = hs.finish(reply)
    sock.sendall(hello)
    return send, recv
