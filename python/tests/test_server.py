"""The client against the real Go server of this tree."""

import contextlib
import hashlib
import os
import socket
import subprocess
import threading

import pytest

import recon


def make_file(path, size, seed=0):
    """A file of size bytes of a fixed pattern; returns its SHA-256."""
    h = hashlib.sha256()
    block = bytes((i * 7 + seed) % 251 for i in range(1 << 16))
    with open(path, "wb") as f:
        left = size
        while left:
            b = block[:min(left, len(block))]
            f.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def test_whole_job(server, tmp_path):
    a, b = tmp_path / "P00000.7", tmp_path / "P00001.7"
    sa, sb = make_file(a, 3 << 20), make_file(b, 1000, seed=3)
    seen = []
    with recon.Client(server.host, server.port, server.key) as c:
        st = c.status()
        assert st["protocol"] == recon.PROTOCOL_VERSION and st["max_workers"] == 2
        job = c.submit([a, b], options={"method": "pics", "note": "a b"}, progress=lambda d, t: seen.append((d, t)))
        assert job.state in ("queued", "running", "succeeded") and len(job.id) > 8
        assert [(f.name, f.size, f.sha256) for f in job.files] == [("P00000.7", 3 << 20, sa), ("P00001.7", 1000, sb)]
        assert seen[-1] == ((3 << 20) + 1000, (3 << 20) + 1000)
        assert job.options == {"method": "pics", "note": "a b"}
        assert any(j.id == job.id for j in c.queue())
        events = []
        done = c.wait(job.id, on_event=events.append, timeout=120)
        assert done.state == "succeeded", done.error
        assert events[-1].state == "succeeded"
        assert c.job(job.id).state == "succeeded"
        out = tmp_path / "out"
        got = []
        results = c.fetch(job.id, out, progress=lambda d, t: got.append(d))
        names = sorted(r.name for r in results)
        assert names == ["copy/P00000.7", "copy/P00001.7", "sums.txt"]
        for r in results:
            with open(r.path, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == r.sha256
            assert os.path.getsize(r.path) == r.size
        assert {r.name: r.sha256 for r in results}["copy/P00000.7"] == sa
        assert got[-1] == sum(r.size for r in results)
        # Fetched once: the server removed them.
        with pytest.raises(recon.ReconError) as e:
            c.fetch(job.id, tmp_path / "again")
        assert e.value.code == "gone"
        assert not (tmp_path / "again").exists()
        # The session goes on after errors.
        assert c.job(job.id).id == job.id


def test_failed_job_and_not_finished(server, tmp_path):
    a = tmp_path / "x.dat"
    make_file(a, 10)
    with recon.Client(server.host, server.port, server.key) as c:
        slow = c.submit(a, options={"sleep": "5"})
        with pytest.raises(recon.ReconError) as e:
            c.fetch(slow.id, tmp_path / "o")
        assert e.value.code == "not_finished"
        with pytest.raises(recon.ReconError) as e:
            c.wait(slow.id, timeout=0.3)
        assert e.value.code == "timeout"
        failed = c.wait(c.submit(a, options={"fail": "1"}).id, timeout=120)
        assert failed.state == "failed" and "failed on purpose" in failed.error


def test_unknown_job_not_found(server):
    with recon.Client(server.host, server.port, server.key) as c:
        for call in (lambda: c.job("0" * 26), lambda: c.wait("nope"), lambda: c.fetch("0" * 26, "/nonexistent/x")):
            with pytest.raises(recon.ReconError) as e:
                call()
            assert e.value.code == "not_found"


def test_wrong_key(server):
    other = recon.client._handshake.parse_key(server.key)
    wrong = bytes([other[0] ^ 1]) + other[1:]
    with pytest.raises(recon.ReconError) as e:
        recon.Client(server.host, server.port, wrong, timeout=5)
    assert e.value.code == "auth"


def test_from_opts(server, tmp_path):
    p = tmp_path / "client.opts"
    p.write_text("# client\nSERVER_HOSTNAME = %s\nserver_port = %d  # comment\nSHARED_KEY = '%s'\n"
                 % (server.host, server.port, server.key))
    with recon.Client.from_opts(p) as c:
        assert c.status()["protocol"] == recon.PROTOCOL_VERSION


def test_identities_and_cancel(recon_bin, tmp_path):
    """Two identities of one server: each sees only its own jobs (another's
    answers as a job that does not exist), and the owner cancels its job."""
    from conftest import start_server
    d = str(tmp_path / "server")
    os.makedirs(d)
    lines = [subprocess.run([recon_bin, "keygen", "--name", n], capture_output=True, text=True, check=True,
                            timeout=30).stdout.strip() for n in ("scanner-a", "scanner-b")]
    with open(os.path.join(d, "keys.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(os.path.join(d, "keys.txt"), 0o600)
    key_a, key_b = (line.split("=", 1)[1].strip() for line in lines)
    s = start_server(recon_bin, d, extra=("CLIENT_KEYS_FILE = keys.txt",))
    try:
        a_file = tmp_path / "a.dat"
        make_file(a_file, 10)
        with recon.Client(s.host, s.port, key_a) as a, recon.Client(s.host, s.port, key_b) as b:
            job = a.submit(a_file, options={"sleep": "30"})
            assert [j.id for j in a.queue()] == [job.id]
            assert job.id not in [j.id for j in b.queue()]
            for call in (lambda: b.job(job.id), lambda: b.wait(job.id, timeout=5),
                         lambda: b.fetch(job.id, tmp_path / "b-out"), lambda: b.cancel(job.id)):
                with pytest.raises(recon.ReconError) as e:
                    call()
                assert e.value.code == "not_found"
            cancelled = a.cancel(job.id)
            assert cancelled.id == job.id and cancelled.state == "cancelled"
            with pytest.raises(recon.ReconError) as e:
                a.cancel(job.id)
            assert e.value.code == "conflict"
            with pytest.raises(recon.ReconError) as e:
                a.cancel("0" * 26)
            assert e.value.code == "not_found"
    finally:
        s.stop()


def test_bad_local_input(server, tmp_path):
    with recon.Client(server.host, server.port, server.key) as c:
        with pytest.raises(ValueError):
            c.submit([])
        with pytest.raises(ValueError):
            c.submit([tmp_path])  # a directory
        bad = tmp_path / "a:b"
        bad.write_bytes(b"x")
        with pytest.raises(ValueError):
            c.submit([bad])
        ok = tmp_path / "ok"
        ok.write_bytes(b"x")
        with pytest.raises(ValueError):
            c.submit([ok], options={"bad key": "x"})
        assert c.status()["protocol"] == recon.PROTOCOL_VERSION


class CuttingProxy:
    """Forwards 127.0.0.1:port to the server; the first connection is cut
    after `cut` bytes from the client. Counts the bytes from the client of
    each connection."""

    def __init__(self, host, port, cut):
        self.target = (host, port)
        self.cut = cut
        self.ln = socket.socket()
        self.ln.bind(("127.0.0.1", 0))
        self.ln.listen(8)
        self.port = self.ln.getsockname()[1]
        self.sent = []
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ln.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            i = len(self.sent)
            self.sent.append(0)
            limit = self.cut if i == 0 else None
            for args in ((c, s, i, limit), (s, c, None, None)):
                t = threading.Thread(target=self._pipe, args=args, daemon=True)
                t.start()
                self.threads.append(t)

    def _pipe(self, src, dst, i, limit):
        try:
            while True:
                b = src.recv(1 << 16)
                if not b:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if limit is not None and self.sent[i] + len(b) >= limit:
                    # Cut both ways, with a reset.
                    for so in (src, dst):
                        so.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        so.close()
                    return
                if i is not None:
                    self.sent[i] += len(b)
                dst.sendall(b)
        except OSError:
            for so in (src, dst):
                try:
                    so.close()
                except OSError:
                    pass

    def close(self):
        self.ln.close()


def test_resume_after_cut(server, tmp_path):
    size = 16 << 20
    a = tmp_path / "big.dat"
    sha = make_file(a, size)
    proxy = CuttingProxy(server.host, server.port, cut=6 << 20)
    try:
        with recon.Client("127.0.0.1", proxy.port, server.key, reconnect_delay=0.1) as c:
            job = c.submit([a])
            assert job.files[0].sha256 == sha
            # One cut, then the second session sent only the rest.
            assert len(proxy.sent) == 2, proxy.sent
            assert proxy.sent[0] < 6 << 20
            assert proxy.sent[1] < size - (1 << 20), proxy.sent
            done = c.wait(job.id, timeout=120)
            assert done.state == "succeeded", done.error
            res = {r.name: r for r in c.fetch(job.id, tmp_path / "out")}
            assert res["copy/big.dat"].sha256 == sha
    finally:
        proxy.close()


def test_session_closed_while_idle_is_replaced(recon_bin, tmp_path):
    from conftest import deadline_poll, start_server
    d = tmp_path / "server"
    d.mkdir()
    srv = start_server(recon_bin, str(d), extra=["IDLE_TIMEOUT_SECONDS = 1"])
    try:
        log = d / "recon.log"
        with recon.Client(srv.host, srv.port, srv.key) as c:
            assert c.status()["protocol"] == recon.PROTOCOL_VERSION
            # The server ends the idle session after 1 s and logs it.
            assert deadline_poll(lambda: log.exists() and "session ended" in log.read_text(), timeout=30), \
                "the server did not close the idle session"
            st = c.status()  # on a new session, without an error
            assert st["protocol"] == recon.PROTOCOL_VERSION
    finally:
        srv.stop()


MEMORY_CHILD = r"""
import hashlib, os, resource, sys
import recon
host, port, key, path, out = sys.argv[1:6]
with recon.Client(host, int(port), key) as c:
    job = c.submit([path])
    job = c.wait(job.id, timeout=300)
    assert job.state == "succeeded", job.error
    res = {r.name: r for r in c.fetch(job.id, out)}
print(res["copy/" + os.path.basename(path)].sha256)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_constant_memory(server, tmp_path):
    # A file several times the memory the client may use goes up and comes
    # back; the client process's peak RSS stays far below the file's size.
    import subprocess
    import sys
    size = 192 << 20
    a = tmp_path / "big.7"
    sha = make_file(a, size)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(recon.__file__)) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", MEMORY_CHILD, server.host, str(server.port), server.key, str(a),
                        str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    got_sha, peak_mib = p.stdout.split()
    assert got_sha == sha
    print("peak RSS %s MiB for a %d MiB file" % (peak_mib, size >> 20))
    assert int(peak_mib) < 64, "peak RSS %s MiB for a %d MiB file" % (peak_mib, size >> 20)


# --- hello and the session's hash (protocol 3), against the real server

B3_ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"  # BLAKE3("abc"), docs/PROTOCOL.md


def raw_session(server):
    """A bare session: the channel and one request at a time."""
    from recon import _handshake, _protocol
    from recon._channel import Channel
    ch = Channel.connect(server.host, server.port, _handshake.parse_key(server.key), 10, 10)

    def call(typ, body, want=None):
        _protocol.write_message(ch, typ, body)
        return _protocol.read_message(ch) if want is None else _protocol.expect(ch, want)
    return ch, call


def test_hello_round_trip(server, tmp_path):
    a = tmp_path / "h.dat"
    sha = make_file(a, 100000)
    with recon.Client(server.host, server.port, server.key) as c:
        assert c.status()["protocol"] == recon.PROTOCOL_VERSION == 3
        job = c.submit([a])
        # The server answered hello (no version-2 fallback), with SHA-256,
        # and checked the file with it: the job shows its SHA-256.
        assert c._ch is not None and c._ch.hash == "sha256" and not c._no_hello
        assert job.files[0].sha256 == sha
        assert c.wait(job.id, timeout=120).state == "succeeded"
        res = {r.name: r for r in c.fetch(job.id, tmp_path / "out")}  # same session: no second hello
        assert res["copy/h.dat"].sha256 == sha


@pytest.mark.parametrize("hashes,want", [
    (["blake3", "sha256"], "blake3"),
    (["sha256", "blake3"], "sha256"),
    (["sha256"], "sha256"),
    (["x-later", "blake3"], "blake3"),  # unknown names are ignored
    (["x-later"], "sha256"),            # none known: sha256
])
def test_hello_reply_of_the_real_server(server, hashes, want):
    ch, call = raw_session(server)
    try:
        assert call("hello", {"hashes": hashes}, "hello_reply") == {"protocol": 3, "hash": want}
    finally:
        ch.close()


@pytest.mark.parametrize("body", [
    {"hashes": []},
    {"hashes": ["sha256"] * 9},
    {"hashes": ["SHA256"]},
    {"hashes": ["a" * 17]},
    {"hashes": [""]},
    {},
])
def test_hello_bad_bodies_are_bad_request(server, body):
    ch, call = raw_session(server)
    try:
        with pytest.raises(recon.ReconError) as e:
            call("hello", body)
        assert e.value.code == "bad_request"
    finally:
        ch.close()


def test_hello_once_and_before_transfers(server):
    for first in (("hello", {"hashes": ["sha256"]}, "hello_reply"),
                  ("fetch", {"job_id": "a" * 26}, None)):  # a fetch, even one refused, is a transfer
        ch, call = raw_session(server)
        try:
            with pytest.raises(recon.ReconError) if first[0] == "fetch" else contextlib.nullcontext():
                call(*first)
            with pytest.raises(recon.ReconError) as e:
                call("hello", {"hashes": ["sha256"]})
            assert e.value.code == "bad_request" and "hello must come before any transfer, once" in e.value.message
        finally:
            ch.close()


def test_blake3_upload_seen_by_this_client(server, tmp_path):
    """A file uploaded in a BLAKE3 session (here by hand, with the
    protocol's test vector) has no SHA-256 in job views, and this client
    decodes them; its results carry blake3 only in a BLAKE3 session, and
    this client fetches them with SHA-256."""
    from recon import _protocol
    ch, call = raw_session(server)
    try:
        assert call("hello", {"hashes": ["blake3"]}, "hello_reply")["hash"] == "blake3"
        ready = call("submit", {"submission_id": "py-b3-1", "files": [{"name": "abc.dat", "size": 3}]}, "submit_ready")
        assert not ready.get("existing")
        ch.write(b"abc")
        job = call("file_done", {"blake3": B3_ABC}, "job")
        # A BLAKE3 session is shown the input's BLAKE3 (and no SHA-256).
        assert job["files"] == [{"name": "abc.dat", "size": 3, "blake3": B3_ABC}]
    finally:
        ch.close_write()
        ch.close()
    with recon.Client(server.host, server.port, server.key) as c:
        j = c.job(job["job_id"])
        assert [(f.name, f.size, f.sha256) for f in j.files] == [("abc.dat", 3, "")]
        assert any(q.id == j.id and q.files[0].sha256 == "" for q in c.queue())
        assert c.wait(j.id, timeout=120).state == "succeeded"
    # In a BLAKE3 session the manifest carries blake3 beside sha256 (not
    # acknowledged: the results stay).
    ch, call = raw_session(server)
    try:
        assert call("hello", {"hashes": ["blake3", "sha256"]}, "hello_reply")["hash"] == "blake3"
        res = call("fetch", {"job_id": j.id}, "results")
        abc = {f["name"]: f for f in res["files"]}["copy/abc.dat"]
        assert abc == {"name": "copy/abc.dat", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest(),
                       "blake3": B3_ABC}
    finally:
        ch.close()
    # This client's SHA-256 session: no blake3, checked with SHA-256.
    ch, call = raw_session(server)
    try:
        assert call("hello", {"hashes": ["sha256"]}, "hello_reply")["hash"] == "sha256"
        res = call("fetch", {"job_id": j.id}, "results")
        assert all("blake3" not in f and _protocol.valid_sha256(f["sha256"]) for f in res["files"])
        assert res["job"]["files"] == [{"name": "abc.dat", "size": 3}]
    finally:
        ch.close()
    with recon.Client(server.host, server.port, server.key) as c:
        res = {r.name: r for r in c.fetch(j.id, tmp_path / "out")}
    assert res["copy/abc.dat"].sha256 == hashlib.sha256(b"abc").hexdigest()
    assert open(res["copy/abc.dat"].path, "rb").read() == b"abc"



def test_through_relay_hello(recon_bin, server, tmp_path):
    """A relay answers hello itself: BLAKE3 to a client that offers it (its
    backend speaks protocol 3), SHA-256 to this client, which offers only
    that; this client submits and fetches through it, checked with SHA-256
    end to end."""
    from conftest import deadline_poll, start_relay
    d = tmp_path / "relay"
    d.mkdir()
    relay = start_relay(recon_bin, str(d), server, server.key)
    try:
        ch, call = raw_session(relay)
        try:
            assert deadline_poll(lambda: not call("queue", {}, "queue_reply").get("unavailable"), timeout=30), \
                "the relay never saw its backend up"
            assert call("hello", {"hashes": ["blake3", "sha256"]}, "hello_reply") == {"protocol": 3, "hash": "blake3"}
        finally:
            ch.close()
        a = tmp_path / "r.dat"
        sha = make_file(a, 200000)
        with recon.Client(relay.host, relay.port, relay.key) as c:
            job = c.submit([a])
            assert c._ch is not None and c._ch.hash == "sha256" and not c._no_hello
            assert job.files[0].sha256 == sha
            assert c.wait(job.id, timeout=120).state == "succeeded"
            res = {r.name: r for r in c.fetch(job.id, tmp_path / "out")}
        assert res["copy/r.dat"].sha256 == sha
    finally:
        relay.stop()
