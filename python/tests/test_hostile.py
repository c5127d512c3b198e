"""The client against a hostile server: a test server in Python that does
the handshake right (or not) and then answers with what a broken or
malicious server might send. The client must fail with a clear
ReconError, write nothing outside the output directory, keep nothing it
did not verify, and never acknowledge results it did not check."""

import hashlib
import json
import os
import socket
import struct
import threading

import pytest

import recon
from conftest import deadline_poll
from recon import _handshake, _noise
from recon._channel import Channel, ChannelError

KEY = _handshake.parse_key(bytes(range(1, 33)))
JOB_ID = "a" * 26


def frame(obj):
    b = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack(">I", len(b)) + b


def job(state="succeeded", **kw):
    d = {"job_id": JOB_ID, "state": state, "submitted_at": "2026-12-07T10:30:00Z", "files": [], "attempts": 1}
    d.update(kw)
    return d


def read_request(ch):
    n = struct.unpack(">I", ch.read_exact(4))[0]
    return json.loads(ch.read_exact(n))


class HostileServer:
    """Serves connections on 127.0.0.1 one at a time with scenario(ch, sock)
    after a correct handshake (or handshake(sock) instead, if given)."""

    def __init__(self, scenario=None, handshake=None):
        self.scenario, self.handshake = scenario, handshake
        self.ln = socket.socket()
        self.ln.bind(("127.0.0.1", 0))
        self.ln.listen(4)
        self.port = self.ln.getsockname()[1]
        self.got = []  # what the scenario recorded
        self.errors = []
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while True:
            try:
                sock, _ = self.ln.accept()
            except OSError:
                return
            sock.settimeout(10)
            try:
                if self.handshake is not None:
                    self.handshake(sock)
                    continue
                ch = self._accept(sock)
                self.scenario(ch, sock, self.got)
            except Exception as e:  # the client hung up: fine
                self.errors.append(e)
            finally:
                sock.close()

    @staticmethod
    def _accept(sock):
        buf = b""
        n = _handshake.PREAMBLE_SIZE
        while len(buf) < n + 50:
            b = sock.recv(n + 50 - len(buf))
            assert b, "client hung up"
            buf += b
        assert buf[:n] == _handshake.preamble(_handshake.ROLE_CLIENT, _handshake.derive_key_id(KEY))
        r = _noise.NNpsk0Responder(buf[:n], _handshake.derive_psk(KEY))
        r.read_message(buf[n + 2:])
        msg, send, recv = r.write_message()
        sock.sendall(struct.pack(">H", len(msg)) + msg)
        hello = b""
        while len(hello) < 19:
            hello += sock.recv(19 - len(hello))
        assert recv.decrypt(b"", hello[2:]) == b"\x03"
        return Channel(sock, send, recv)

    def client(self, **kw):
        kw.setdefault("timeout", 5)
        kw.setdefault("idle_timeout", 5)
        return recon.Client("127.0.0.1", self.port, KEY, **kw)

    def close(self):
        self.ln.close()


@pytest.fixture
def hostile():
    servers = []

    def start(scenario=None, handshake=None):
        s = HostileServer(scenario, handshake)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.close()


def code_of(fn):
    with pytest.raises(recon.ReconError) as e:
        fn()
    return e.value.code


def test_silent_close_is_auth(hostile):
    s = hostile(handshake=lambda sock: sock.recv(72))
    assert code_of(s.client) == "auth"


def test_other_version_is_named(hostile):
    def hs(sock):
        sock.recv(72)
        sock.sendall(b"RCN\x00\x03")
    s = hostile(handshake=hs)
    with pytest.raises(recon.ReconError) as e:
        s.client().status()
    assert e.value.code == "version"
    assert "version 3" in str(e.value) and "version 2" in str(e.value)


def test_garbage_handshake_reply_is_auth(hostile):
    def hs(sock):
        sock.recv(72)
        sock.sendall(b"\x00\x30" + os.urandom(48))
    s = hostile(handshake=hs)
    assert code_of(s.client) == "auth"


def reply_with(raw):
    def scenario(ch, sock, got):
        got.append(read_request(ch))
        ch.write(raw)
        ch.close_write()
    return scenario


@pytest.mark.parametrize("raw", [
    struct.pack(">I", (16 << 20) + 1),            # a message over the cap: refused before it is read
    struct.pack(">I", 0),                         # a zero length
    frame(b"{not json"),
    frame(b'{"type":"status_reply","type":"x"}'),  # duplicate keys
    frame(b'{"type":"status_reply","body":[1]}'),  # a body that is not an object
    frame(b'{"type":"status_reply","body":{},"extra":1}'),
    frame(b"[" * 100000 + b"]" * 100000),         # nesting that would exhaust the stack
    frame({"type": "job", "body": {}}),            # the wrong reply type
    frame({"type": "error", "body": {"code": 5, "message": "x"}}),
])
def test_bad_messages_are_protocol_errors(hostile, raw):
    s = hostile(reply_with(raw))
    with s.client() as c:
        assert code_of(c.status) == "protocol"


@pytest.mark.parametrize("body", [
    job(state="exploded"),
    job(job_id="b" * 26),                                            # another job than asked
    job(results=[{"name": "../x", "size": 1, "sha256": "0" * 64}]),
    job(results=[{"name": "a", "size": -1, "sha256": "0" * 64}]),
    job(results=[{"name": "a", "size": True, "sha256": "0" * 64}]),
    job(results=[{"name": "a", "size": 1, "sha256": "XYZ"}]),
    job(options={"a": 1}),
])
def test_bad_jobs_are_protocol_errors(hostile, body):
    s = hostile(reply_with(frame({"type": "job", "body": body})))
    with s.client() as c:
        assert code_of(lambda: c.job(JOB_ID)) == "protocol"


def test_error_reply_has_its_code(hostile):
    s = hostile(reply_with(frame({"type": "error", "body": {"code": "not_found", "message": "no job"}})))
    with s.client() as c:
        with pytest.raises(recon.ReconError) as e:
            c.job(JOB_ID)
        assert e.value.code == "not_found" and "no job" in str(e.value)


def fetch_scenario(files, data, cut=False, tamper=False):
    """Announce files, send data, then record the client's next message
    (its ack, or nothing)."""
    def scenario(ch, sock, got):
        read_request(ch)
        ch.write(frame({"type": "results", "body": {"job": job(), "files": files}}))
        if tamper:
            # A record whose ciphertext is altered.
            rec = _handshake.seal_record(ch._send, 1, data)
            sock.sendall(rec[:5] + bytes([rec[5] ^ 1]) + rec[6:])
        else:
            ch.write(data)
        if cut:
            sock.shutdown(socket.SHUT_RDWR)
            return
        try:
            got.append(read_request(ch))
        except (ChannelError, OSError, struct.error) as e:
            got.append(("no ack", type(e).__name__))
    return scenario


def sha(b):
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil", "a\\b", "CON", "x/./y", "", "a//b", "a/"])
def test_fetch_refuses_bad_names(hostile, tmp_path, name):
    s = hostile(fetch_scenario([{"name": name, "size": 4, "sha256": sha(b"evil")}], b"evil"))
    out = tmp_path / "d" / "out"
    with s.client() as c:
        assert code_of(lambda: c.fetch(JOB_ID, out)) == "protocol"
    assert not out.exists()
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs] == []
    assert not any(isinstance(g, dict) and g.get("type") == "ack" for g in s.got)


def test_fetch_refuses_duplicate_names(hostile, tmp_path):
    f = {"name": "a", "size": 1, "sha256": sha(b"x")}
    s = hostile(fetch_scenario([f, dict(f, name="A")], b"xx"))
    with s.client() as c:
        assert code_of(lambda: c.fetch(JOB_ID, tmp_path / "out")) == "protocol"
    assert os.listdir(tmp_path) == []


def test_fetch_hash_mismatch_keeps_nothing_and_does_not_ack(hostile, tmp_path):
    good = b"good bytes"
    s = hostile(fetch_scenario([{"name": "ok", "size": len(good), "sha256": sha(good)},
                                {"name": "bad", "size": 4, "sha256": sha(b"nope")}], good + b"evil"))
    out = tmp_path / "out"
    with s.client() as c:
        assert code_of(lambda: c.fetch(JOB_ID, out)) == "hash_mismatch"
    assert os.listdir(tmp_path) == []  # neither out nor the temporary directory
    assert deadline_poll(lambda: s.got), "the server did not see the session end"
    assert s.got[0][0] == "no ack", s.got


@pytest.mark.parametrize("cut,tamper", [(True, False), (False, True)])
def test_fetch_truncated_or_tampered_stream(hostile, tmp_path, cut, tamper):
    data = b"0123456789" * 1000
    files = [{"name": "f", "size": len(data) + 5, "sha256": sha(data + b"12345")}]
    s = hostile(fetch_scenario(files, data, cut=cut, tamper=tamper))
    with s.client() as c:
        assert code_of(lambda: c.fetch(JOB_ID, tmp_path / "out")) == "connection"
    assert os.listdir(tmp_path) == []


def test_submit_bad_resume_offsets(hostile, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)

    def scenario(ch, sock, got):
        got.append(read_request(ch))
        ch.write(frame({"type": "submit_ready", "body": {"resume": [11]}}))
        ch.close_write()
    s = hostile(scenario)
    with s.client() as c:
        assert code_of(lambda: c.submit([p])) == "protocol"


def test_wait_event_of_another_job(hostile):
    s = hostile(reply_with(frame({"type": "event", "body": {"job": job(job_id="b" * 26)}})))
    with s.client() as c:
        assert code_of(lambda: c.wait(JOB_ID)) == "protocol"


def test_silent_server_times_out(hostile):
    done = threading.Event()

    def scenario(ch, sock, got):
        read_request(ch)
        done.wait(10)  # answer nothing
    s = hostile(scenario)
    try:
        with s.client(idle_timeout=0.5) as c:
            assert code_of(c.status) == "timeout"
    finally:
        done.set()
