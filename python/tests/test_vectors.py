"""The protocol's test vectors (internal/secure/testdata/vectors.json and
internal/protocol/testdata/wire.golden, written by the Go tests), checked
against this package's own handshake, records and message decoding."""

import json
import os
import struct

import pytest

from recon import _handshake, _noise, _protocol
from recon.client import Job

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = os.path.join(REPO, "internal", "secure", "testdata", "vectors.json")
WIRE = os.path.join(REPO, "internal", "protocol", "testdata", "wire.golden")


@pytest.fixture(scope="module")
def v():
    with open(VECTORS) as f:
        return json.load(f)


def h(s):
    return bytes.fromhex(s)


def test_key_preamble_psk(v):
    key = _handshake.parse_key(v["key"])
    assert _handshake.key_id_info(v["role"]).decode() == v["key_id_info"]
    assert _handshake.derive_key_id(key, v["role"]) == h(v["key_id"])
    assert _handshake.preamble(v["role"], h(v["key_id"])) == h(v["preamble"])
    assert _handshake.psk_info(v["role"]).decode() == v["psk_info"]
    assert _handshake.derive_psk(key, v["role"]) == h(v["psk"])
    assert _noise.PROTOCOL_NAME.decode() == v["noise_protocol"]


def test_handshake_transcript(v):
    key = _handshake.parse_key(v["key"])
    hs = _handshake.ClientHandshake(key, v["role"], ephemeral=h(v["client_ephemeral_private"]))
    assert hs.first_flight() == h(v["client_first_flight"])
    hello, send, recv = hs.finish(h(v["server_reply"]))
    assert hello == h(v["client_hello"])
    assert send.key == h(v["client_to_server_key"])
    assert recv.key == h(v["server_to_client_key"])


def test_responder_matches(v):
    # The test server's side of the handshake gives the same bytes.
    key = _handshake.parse_key(v["key"])
    pre = _handshake.preamble(v["role"], h(v["key_id"]))
    r = _noise.NNpsk0Responder(pre, _handshake.derive_psk(key, v["role"]), h(v["server_ephemeral_private"]))
    first = h(v["client_first_flight"])
    assert first[:_handshake.PREAMBLE_SIZE] == pre
    r.read_message(first[_handshake.PREAMBLE_SIZE + 2:])
    msg, send, recv = r.write_message()
    assert struct.pack(">H", len(msg)) + msg == h(v["server_reply"])
    assert send.key == h(v["server_to_client_key"]) and recv.key == h(v["client_to_server_key"])


def test_wrong_key_fails(v):
    key = bytes(range(2, 34))
    hs = _handshake.ClientHandshake(key, v["role"], ephemeral=h(v["client_ephemeral_private"]))
    assert hs.first_flight() != h(v["client_first_flight"])
    with pytest.raises(_handshake.HandshakeRefused):
        hs.finish(h(v["server_reply"]))


def test_records(v):
    keys = {"client": _noise.CipherState(h(v["client_to_server_key"])),
            "server": _noise.CipherState(h(v["server_to_client_key"]))}
    opened = {"client": _noise.CipherState(h(v["client_to_server_key"])),
              "server": _noise.CipherState(h(v["server_to_client_key"]))}
    keys["client"].n = opened["client"].n = 1  # the hello took nonce 0
    for r in v["records"]:
        assert keys[r["from"]].n == r["nonce"]
        wire = _handshake.seal_record(keys[r["from"]], r["type"], h(r["payload"]))
        assert wire == h(r["wire"])
        pt = opened[r["from"]].decrypt(b"", h(r["wire"])[2:])
        assert pt[0] == r["type"] and pt[1:] == h(r["payload"])
    # The first two records are control messages: decode their frames.
    req, rep = h(v["records"][0]["payload"]), h(v["records"][1]["payload"])
    assert struct.unpack(">I", req[:4])[0] == len(req) - 4
    assert json.loads(req[4:]) == {"type": "status", "body": {}}
    assert json.loads(rep[4:])["body"]["code"] == "not_found"


def test_tampered_record_fails(v):
    r = v["records"][0]
    cs = _noise.CipherState(h(v["client_to_server_key"]))
    cs.n = 1
    bad = bytearray(h(r["wire"])[2:])
    bad[5] ^= 1
    with pytest.raises(_noise.NoiseError):
        cs.decrypt(b"", bytes(bad))


def test_wire_golden_decodes():
    with open(WIRE, "rb") as f:
        lines = [l for l in f.read().split(b"\n") if l]
    seen = set()
    for line in lines:
        env = json.loads(line)
        typ, body = env["type"], env["body"]
        seen.add(typ)
        if typ == "job" and body["job_id"] == "c" * 26:
            # An input checked with BLAKE3, as a SHA-256 session sees it.
            j = Job._from_wire(body)
            assert [(f.name, f.size, f.sha256) for f in j.files] == [("k.cfl", 8, "")]
            seen.add("job without sha256")
        elif typ == "job":
            j = Job._from_wire(body)
            assert j.state == "succeeded" and j.results[0].name == "images/slice_001.dcm"
            assert j.exit_code == 0 and j.options == {"method": "pics"}
        elif typ == "hello":
            assert body["hashes"][-1] == "sha256"
        elif typ == "hello_reply":
            assert body == {"protocol": _protocol.VERSION, "hash": "blake3"}
        elif typ == "event":
            assert Job._from_wire(body["job"]).position == 2
        elif typ == "queue_reply":
            assert [Job._from_wire(j).state for j in body["jobs"]] == ["queued", "succeeded"]
        elif typ == "results":
            assert _protocol.file_sums(body["files"], "results", True)[0][0] == "images/slice_001.dcm"
    assert {"job", "event", "queue_reply", "results", "status_reply", "submit", "hello", "hello_reply",
            "job without sha256"} <= seen


def test_tested_copy():
    # Under scripts/python-test.sh, the installed package is the one tested.
    import recon
    inst = os.environ.get("RECON_TEST_INSTALLED")
    if inst:
        assert os.path.dirname(os.path.abspath(recon.__file__)) == os.path.join(os.path.abspath(inst), "recon")
        with open(os.path.join(inst, "recon", "py.typed")):
            pass
