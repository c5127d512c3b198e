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
B3_ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"  # BLAKE3("abc"), docs/PROTOCOL.md
JOB_ID = "a" * 26


def frame(obj):
    b = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack(">I", len(b)) + b


def job(state="succeeded", **kw):
    d = {"job_id": JOB_ID, "state": state, "submitted_at": "2026-12-07T10:30:00Z", "files": [], "attempts": 1}
    d.update(kw)
    return d


class EndSession(Exception):
    """The test server ends the session (as a version-2 server does after
    a bad_request)."""


def read_message(ch):
    n = struct.unpack(">I", ch.read_exact(4))[0]
    return json.loads(ch.read_exact(n))


def read_request(ch):
    """The client's next request. A hello before it is answered as the
    server's hello says (HostileServer's hello) and recorded in its
    hellos."""
    req = read_message(ch)
    if req.get("type") == "hello":
        ch.hellos.append(req)
        if ch.hello == "v2":
            ch.write(frame({"type": "error", "body": {"code": "bad_request", "message": 'unknown request "hello"'}}))
            ch.close_write()
            raise EndSession()
        ch.write(frame({"type": "hello_reply", "body": ch.hello}))
        req = read_message(ch)
    return req


class HostileServer:
    """Serves connections on 127.0.0.1 one at a time with scenario(ch, sock)
    after a correct handshake (or handshake(sock) instead, if given).

    hello is how it answers a hello (see read_request): the body of its
    hello_reply (by default a version-3 server's, SHA-256), or "v2": an
    error bad_request, then the session ends, as a version-2 server does."""

    def __init__(self, scenario=None, handshake=None, hello=None):
        self.scenario, self.handshake = scenario, handshake
        self.hello = {"protocol": 3, "hash": "sha256"} if hello is None else hello
        self.hellos = []  # the hello requests received, over all sessions
        self.sessions = 0
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
                self.sessions += 1
                ch.hello, ch.hellos = self.hello, self.hellos
                self.scenario(ch, sock, self.got)
            except EndSession:
                pass
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

    def start(scenario=None, handshake=None, hello=None):
        s = HostileServer(scenario, handshake, hello)
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
            return
        ch.write(frame({"type": "ack_done", "body": {"job_id": JOB_ID}}))
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


# --- hello: the session's hash (protocol 3)


def transfer_scenario(size, data=b""):
    """Serve a session's requests until it ends: a submit of one file of
    size bytes (recording its digest and the client's file_done, answered
    with the job), a fetch (one result, data) and its ack."""
    def scenario(ch, sock, got):
        while True:
            try:
                req = read_request(ch)
            except (ChannelError, OSError, struct.error):
                got.append(("end",))
                return
            got.append(req)
            if req["type"] == "submit":
                ch.write(frame({"type": "submit_ready", "body": {}}))
                got.append(("bytes", sha(ch.read_exact(size))))
                got.append(read_message(ch))
                name = req["body"]["files"][0]["name"]
                ch.write(frame({"type": "job", "body": job(state="queued", files=[{"name": name, "size": size}])}))
            elif req["type"] == "fetch":
                f = [{"name": "r", "size": len(data), "sha256": sha(data)}]
                ch.write(frame({"type": "results", "body": {"job": job(), "files": f}}))
                ch.write(data)
            elif req["type"] == "ack":
                ch.write(frame({"type": "ack_done", "body": {"job_id": JOB_ID}}))
    return scenario


def test_hello_once_per_session_sha256_only(hostile, tmp_path):
    p = tmp_path / "in.dat"
    p.write_bytes(b"raw data" * 1000)
    s = hostile(transfer_scenario(8000, b"result"))
    with s.client() as c:
        st = c.submit([p])
        assert st.files[0].sha256 == ""  # the server sent none
        assert [r.name for r in c.fetch(JOB_ID, tmp_path / "out")] == ["r"]
    assert deadline_poll(lambda: len(s.got) == 6), s.got
    assert s.got[5] == ("end",)
    assert s.hellos == [{"type": "hello", "body": {"hashes": ["sha256"]}}]
    assert s.sessions == 1
    assert s.got[1] == ("bytes", sha(p.read_bytes()))
    assert s.got[2] == {"type": "file_done", "body": {"sha256": sha(p.read_bytes())}}
    assert [g["type"] for g in (s.got[0], s.got[3], s.got[4])] == ["submit", "fetch", "ack"]


def test_hello_not_sent_for_other_requests(hostile):
    s = hostile(reply_with(frame({"type": "status_reply", "body": {"protocol": 3}})))
    with s.client() as c:
        assert c.status()["protocol"] == 3
    assert deadline_poll(lambda: s.got)
    assert s.got[0]["type"] == "status" and s.hellos == []


def test_hello_version2_server_falls_back_to_sha256(hostile, tmp_path):
    # A version-2 server answers hello with bad_request and closes the
    # session: the client opens another, submits without hello, with
    # SHA-256, and sends this server no hello again.
    p = tmp_path / "in.dat"
    p.write_bytes(os.urandom(5000))
    s = hostile(transfer_scenario(5000), hello="v2")
    with s.client() as c:
        assert c.submit([p]).state == "queued"
        assert c.submit([p]).state == "queued"
    assert deadline_poll(lambda: s.got[-1:] == [("end",)]), s.got
    assert len(s.hellos) == 1 and s.sessions == 2
    assert len(s.got) == 7, s.got
    for i in (0, 3):
        assert s.got[i]["type"] == "submit"
        assert s.got[i + 2] == {"type": "file_done", "body": {"sha256": sha(p.read_bytes())}}


@pytest.mark.parametrize("reply", [
    {"protocol": 3, "hash": "blake3"},  # not offered
    {"protocol": 3, "hash": "md5"},
    {"protocol": 3},                    # no hash
    {"protocol": 3, "hash": 256},
    {"protocol": "3", "hash": "sha256"},
])
@pytest.mark.parametrize("op", ["submit", "fetch"])
def test_hello_bad_reply_is_protocol_error(hostile, tmp_path, reply, op):
    p = tmp_path / "in.dat"
    p.write_bytes(b"x" * 100)
    s = hostile(transfer_scenario(100, b"r"), hello=reply)
    with s.client() as c:
        with pytest.raises(recon.ReconError) as e:
            c.submit([p]) if op == "submit" else c.fetch(JOB_ID, tmp_path / "out")
    assert e.value.code == "protocol"
    if reply.get("hash") == "blake3":
        assert "blake3" in str(e.value) and "did not offer" in str(e.value)
    # The client hung up after the hello: nothing sent after it, nothing
    # written.
    assert deadline_poll(lambda: s.got), "the server did not see the session end"
    assert len(s.hellos) == 1 and s.got == [("end",)], s.got
    assert not (tmp_path / "out").exists()


def test_job_views_accept_inputs_without_sha256(hostile):
    # Inputs uploaded with BLAKE3 (by a protocol-3 client of the same
    # identity) have no sha256 in job views.
    files = [{"name": "a.dat", "size": 3}, {"name": "b.dat", "size": 4, "sha256": sha(b"bbbb")}]
    s = hostile(reply_with(frame({"type": "queue_reply", "body": {"jobs": [job(state="queued", files=files)]}})))
    with s.client() as c:
        [j] = c.queue()
    assert [(f.name, f.size, f.sha256) for f in j.files] == [("a.dat", 3, ""), ("b.dat", 4, sha(b"bbbb"))]


@pytest.mark.parametrize("blake3,sha256", [
    ("0" * 64, "good"),   # a BLAKE3 in a SHA-256 session: the server is not in the session agreed
    ("zz", "good"),       # a malformed one
    (B3_ABC, "good"),     # even a right one
    ("0" * 64, None),     # blake3 never stands in for sha256
])
def test_fetch_refuses_blake3_in_a_sha256_session(hostile, tmp_path, blake3, sha256):
    data = b"abc"
    f = {"name": "r", "size": len(data), "blake3": blake3}
    if sha256 is not None:
        f["sha256"] = sha(data)
    s = hostile(fetch_scenario([f], data))
    out = tmp_path / "out"
    with s.client() as c:
        assert code_of(lambda: c.fetch(JOB_ID, out)) == "protocol"
    assert os.listdir(tmp_path) == []
    assert deadline_poll(lambda: s.got), "the server did not see the session end"
    assert s.got[0][0] == "no ack", s.got
