"""Reading the client settings of a recon.opts file (ITEM = VALUE lines)."""

from __future__ import annotations

import os
import re
from typing import Dict, Union

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_FILE_SIZE = 1 << 20


def load(path: "Union[str, os.PathLike[str]]") -> Dict[str, str]:
    """The ITEM = VALUE pairs of a recon.opts file, keys in upper case.

    As recon reads it: blank lines and lines starting with # are skipped;
    a value may be quoted with " or ' (kept as is inside); an unquoted
    value ends at a #. ValueError for a malformed line or a key set
    twice; messages never quote a value (it may be a key)."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise ValueError("%s: file is larger than %d bytes" % (path, MAX_FILE_SIZE))
    text = data.decode("utf-8-sig")
    out: Dict[str, str] = {}
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r").strip()
        if not line or line.startswith("#"):
            continue
        m = re.search(r"[=#]", line)
        if m is None or m.group() == "#":
            raise ValueError("%s:%d: missing '=': want ITEM = VALUE" % (path, n))
        key = line[:m.start()].strip()
        if not _KEY.match(key):
            raise ValueError("%s:%d: malformed key name" % (path, n))
        key = key.upper()
        rest = line[m.start() + 1:].strip()
        if rest[:1] in ('"', "'"):
            end = rest.find(rest[0], 1)
            if end < 0:
                raise ValueError("%s:%d: unterminated quote in the value of %s" % (path, n, key))
            after = rest[end + 1:].strip()
            if after and not after.startswith("#"):
                raise ValueError("%s:%d: text after the closing quote in the value of %s" % (path, n, key))
            value = rest[1:end]
        else:
            value = rest.split("#", 1)[0].strip()
        if key in out:
            raise ValueError("%s:%d: duplicate key %s" % (path, n, key))
        out[key] = value
    return out
