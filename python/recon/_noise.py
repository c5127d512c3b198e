"""The Noise protocol framework, as much of it as recon uses.

Noise_NNpsk0_25519_AESGCM_SHA256 (https://noiseprotocol.org/noise.html,
revision 34): the symmetric state, the two handshake messages of NNpsk0
with empty payloads, and the cipher states of the transport phase. X25519
and AES-256-GCM come from ``cryptography``; SHA-256 and HMAC from the
standard library. Nothing here touches a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Optional, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PROTOCOL_NAME = b"Noise_NNpsk0_25519_AESGCM_SHA256"
HASHLEN = 32
DHLEN = 32
TAGLEN = 16
MAX_NONCE = 2**64 - 2  # 2^64-1 is reserved by Noise

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


class NoiseError(Exception):
    """A handshake message or record failed to decrypt."""


def _nonce(n: int) -> bytes:
    # AESGCM: 32 bits of zeros, then the counter big-endian (Noise 12.3).
    return b"\x00\x00\x00\x00" + struct.pack(">Q", n)


class CipherState:
    """One direction's key and nonce counter (Noise 5.1)."""

    __slots__ = ("_aead", "n", "key")

    def __init__(self, key: Optional[bytes] = None) -> None:
        self.key = key
        self._aead = AESGCM(key) if key is not None else None
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        """Seal plaintext with the next nonce (no key: returned as is)."""
        if self._aead is None:
            return bytes(plaintext)
        if self.n > MAX_NONCE:
            raise NoiseError("nonce exhausted: open a new connection")
        out = self._aead.encrypt(_nonce(self.n), plaintext, ad or None)
        self.n += 1
        return out

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Open ciphertext with the next nonce; NoiseError if it fails."""
        if self._aead is None:
            return bytes(ciphertext)
        if self.n > MAX_NONCE:
            raise NoiseError("nonce exhausted")
        try:
            out = self._aead.decrypt(_nonce(self.n), ciphertext, ad or None)
        except InvalidTag:
            raise NoiseError("authentication failed") from None
        self.n += 1
        return out


def _hkdf(ck: bytes, ikm: bytes, outputs: int) -> Tuple[bytes, ...]:
    # Noise 4.3: HKDF with HMAC-SHA256, chaining key as salt.
    temp = hmac.new(ck, ikm, hashlib.sha256).digest()
    out = []
    prev = b""
    for i in range(1, outputs + 1):
        prev = hmac.new(temp, prev + bytes([i]), hashlib.sha256).digest()
        out.append(prev)
    return tuple(out)


class SymmetricState:
    """Noise 5.2: chaining key, handshake hash and the handshake's cipher."""

    def __init__(self, prologue: bytes) -> None:
        name = PROTOCOL_NAME
        if len(name) <= HASHLEN:
            self.h = name + b"\x00" * (HASHLEN - len(name))
        else:
            self.h = hashlib.sha256(name).digest()
        self.ck = self.h
        self.cs = CipherState()
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, k = _hkdf(self.ck, ikm, 2)
        self.cs = CipherState(k)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, th, k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(th)
        self.cs = CipherState(k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cs.encrypt(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        pt = self.cs.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> Tuple[CipherState, CipherState]:
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


def _public(priv: X25519PrivateKey) -> bytes:
    return priv.public_key().public_bytes(_RAW, _RAW_PUB)


class NNpsk0Initiator:
    """The initiator (client) of Noise_NNpsk0_25519_AESGCM_SHA256:

        -> psk, e
        <- e, ee

    Both payloads are empty. ``ephemeral`` fixes the ephemeral private key,
    for test vectors only; by default a fresh one is generated.
    """

    def __init__(self, prologue: bytes, psk: bytes, ephemeral: Optional[bytes] = None) -> None:
        if len(psk) != 32:
            raise ValueError("psk must be 32 bytes")
        self._ss = SymmetricState(prologue)
        self._psk = psk
        if ephemeral is None:
            self._e = X25519PrivateKey.generate()
        else:
            self._e = X25519PrivateKey.from_private_bytes(ephemeral)
        self.handshake_hash = b""

    def write_message(self) -> bytes:
        """The first message: the ephemeral public key and the tag of the
        empty payload (48 bytes)."""
        ss = self._ss
        ss.mix_key_and_hash(self._psk)  # psk
        e_pub = _public(self._e)  # e
        ss.mix_hash(e_pub)
        ss.mix_key(e_pub)  # psk handshakes mix e into the key too
        return e_pub + ss.encrypt_and_hash(b"")

    def read_message(self, message: bytes) -> Tuple[CipherState, CipherState]:
        """Read the responder's message; return (send, receive) cipher
        states. NoiseError if it does not authenticate."""
        if len(message) != DHLEN + TAGLEN:
            raise NoiseError("handshake message has a wrong length")
        ss = self._ss
        re = message[:DHLEN]
        ss.mix_hash(re)  # e
        ss.mix_key(re)
        try:  # ee
            shared = self._e.exchange(X25519PublicKey.from_public_bytes(re))
        except ValueError:
            raise NoiseError("bad ephemeral key") from None
        ss.mix_key(shared)
        if ss.decrypt_and_hash(message[DHLEN:]) != b"":
            raise NoiseError("handshake payload is not empty")
        self.handshake_hash = ss.h
        return ss.split()


class NNpsk0Responder:
    """The responder (server) side, for the Python tests' hostile server."""

    def __init__(self, prologue: bytes, psk: bytes, ephemeral: Optional[bytes] = None) -> None:
        self._ss = SymmetricState(prologue)
        self._psk = psk
        self._e = (X25519PrivateKey.generate() if ephemeral is None
                   else X25519PrivateKey.from_private_bytes(ephemeral))

    def read_message(self, message: bytes) -> None:
        if len(message) != DHLEN + TAGLEN:
            raise NoiseError("handshake message has a wrong length")
        ss = self._ss
        ss.mix_key_and_hash(self._psk)
        self._re = message[:DHLEN]
        ss.mix_hash(self._re)
        ss.mix_key(self._re)
        if ss.decrypt_and_hash(message[DHLEN:]) != b"":
            raise NoiseError("handshake payload is not empty")

    def write_message(self) -> Tuple[bytes, CipherState, CipherState]:
        """The second message, and the (send, receive) cipher states."""
        ss = self._ss
        e_pub = _public(self._e)
        ss.mix_hash(e_pub)
        ss.mix_key(e_pub)
        try:
            shared = self._e.exchange(X25519PublicKey.from_public_bytes(self._re))
        except ValueError:
            raise NoiseError("bad ephemeral key") from None
        ss.mix_key(shared)
        msg = e_pub + ss.encrypt_and_hash(b"")
        c1, c2 = ss.split()
        return msg, c2, c1
