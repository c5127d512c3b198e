"""Control messages inside the channel (docs/PROTOCOL.md, "Control
messages"): framing, the envelope, and checks on what a server sends."""

from __future__ import annotations

import json
import re
import struct
import unicodedata
from typing import Any, Dict, List, Tuple

from ._channel import Channel
from .errors import ReconError

#: The application protocol version (docs/PROTOCOL.md, "Versions"): the
#: requests, replies and file streams inside the channel, reported as
#: ``protocol`` in the server's status. The channel under it (preamble,
#: handshake, records) has its own version, _handshake.VERSION.
VERSION = 3

#: The end-to-end hashes this client offers in hello, in its order of
#: preference. Only SHA-256: Python's standard library has no BLAKE3, and
#: hashlib's SHA-256 runs in OpenSSL. Every server supports it.
HASHES = ("sha256",)

MAX_MESSAGE_SIZE = 16 << 20
MAX_NAME_LEN = 255
MAX_RESULT_NAME_LEN = 1024
MAX_FILES = 100_000

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {"COM%s" % c for c in "123456789¹²³"} | {"LPT%s" % c for c in "123456789¹²³"}


def protocol_error(msg: str) -> ReconError:
    """The server broke the protocol: the session cannot go on."""
    return ReconError("protocol", "the server broke the protocol: " + msg)


def write_message(ch: Channel, typ: str, body: Any = None) -> None:
    """Send one control message: 4-byte big-endian length, then the JSON
    envelope {"type": typ, "body": body}."""
    env: Dict[str, Any] = {"type": typ}
    if body is not None:
        env["body"] = body
    b = json.dumps(env, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(b) > MAX_MESSAGE_SIZE:
        raise ValueError("%s message of %d bytes is over %d" % (typ, len(b), MAX_MESSAGE_SIZE))
    ch.write(struct.pack(">I", len(b)) + b)


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def read_message(ch: Channel) -> Tuple[str, Dict[str, Any]]:
    """Read one control message; return (type, body). A message of type
    "error" is raised as ReconError with its code."""
    n = struct.unpack(">I", ch.read_exact(4))[0]
    if n == 0 or n > MAX_MESSAGE_SIZE:
        raise protocol_error("a control message of %d bytes (at most %d)" % (n, MAX_MESSAGE_SIZE))
    raw = ch.read_exact(n)
    try:
        env = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise protocol_error("a control message that is not valid JSON (%s)" % str(e)[:80]) from None
    if not isinstance(env, dict) or not isinstance(env.get("type"), str) or set(env) - {"type", "body"}:
        raise protocol_error("a control message without a valid envelope")
    body = env.get("body", {})
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise protocol_error("a %s message whose body is not an object" % env["type"][:40])
    if env["type"] == "error":
        code = body.get("code") or "internal"
        msg = body.get("message")
        if not isinstance(code, str) or not isinstance(msg, str):
            raise protocol_error("a malformed error message")
        raise ReconError(code[:64], msg[:4096])
    return env["type"], body


def expect(ch: Channel, want: str) -> Dict[str, Any]:
    """Read one message that must be of type want."""
    typ, body = read_message(ch)
    if typ != want:
        raise protocol_error("a %r message where %r was due" % (typ[:40], want))
    return body


def call(ch: Channel, typ: str, body: Any, want: str) -> Dict[str, Any]:
    """One request and its one reply."""
    write_message(ch, typ, body)
    return expect(ch, want)


# --- checks on what the server sends


def get(d: Dict[str, Any], key: str, kind: Any, default: Any = None, required: bool = False) -> Any:
    """d[key] if it has the JSON type kind (int excludes bool)."""
    if key not in d or d[key] is None:
        if required:
            raise protocol_error("a message without %r" % key)
        return default
    v = d[key]
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if not ok:
        raise protocol_error("%r is a %s, not a %s" % (key, type(v).__name__, getattr(kind, "__name__", kind)))
    return v


def valid_sha256(s: Any) -> bool:
    return isinstance(s, str) and _SHA256_RE.match(s) is not None


def check_file_name(name: str) -> None:
    """The rules of a file name on the wire (ValueError if broken): a
    plain name, none of / \\ : < > " | ? *, no control or invisible
    formatting characters, no leading or trailing white space, no trailing
    dot, not . or .., not a reserved Windows device name, at most 255
    bytes of UTF-8."""
    if not isinstance(name, str) or name == "":
        raise ValueError("empty file name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("file name %r is not valid UTF-8" % name) from None
    if size > MAX_NAME_LEN:
        raise ValueError("file name %r is %d bytes, at most %d" % (name[:40], size, MAX_NAME_LEN))
    if name in (".", ".."):
        raise ValueError("file name %r is not allowed" % name)
    for ch in name:
        if ch in '/\\:<>"|?*':
            raise ValueError("file name %r contains %r" % (name, ch))
        cat = unicodedata.category(ch)
        if cat == "Cc":
            raise ValueError("file name %r contains a control character" % name)
        if cat == "Cf":
            raise ValueError("file name %r contains an invisible formatting character" % name)
    if name.strip() != name:
        raise ValueError("file name %r starts or ends with white space" % name)
    if name.endswith("."):
        raise ValueError("file name %r ends with a dot" % name)
    if name.split(".", 1)[0].strip().upper() in _RESERVED:
        raise ValueError("file name %r is a reserved device name" % name)


def check_result_name(name: str) -> None:
    """A result's relative path: '/'-separated valid file names, at most
    1024 bytes."""
    if not isinstance(name, str) or name == "":
        raise ValueError("empty result name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_RESULT_NAME_LEN:
        raise ValueError("result name %r is too long" % name[:40])
    for el in name.split("/"):
        check_file_name(el)


def file_sums(v: Any, what: str, result_names: bool) -> List[Tuple[str, int, str]]:
    """A list of {name, size, sha256} from the server, checked: name and
    size required, sha256 "" when absent (an input file uploaded with
    BLAKE3 has none in job views; fetch requires it of results). Other
    fields are ignored here ("blake3" is checked by fetch)."""
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > MAX_FILES:
        raise protocol_error("%s is not a list of files" % what)
    out = []
    for f in v:
        if not isinstance(f, dict):
            raise protocol_error("%s holds a %s, not a file" % (what, type(f).__name__))
        name = get(f, "name", str, required=True)
        size = get(f, "size", int, required=True)
        sha = get(f, "sha256", str, default="")
        try:
            (check_result_name if result_names else check_file_name)(name)
        except ValueError as e:
            raise protocol_error("%s: %s" % (what, e)) from None
        if size < 0 or (sha and not valid_sha256(sha)):
            raise protocol_error("%s: a bad entry for %r" % (what, name[:80]))
        out.append((name, size, sha))
    return out
