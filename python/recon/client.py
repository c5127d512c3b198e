"""The recon client: submit raw-data files as jobs, follow them and fetch
their verified results, over recon's encrypted channel."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from . import _handshake, _opts, _protocol
from ._channel import Channel, ChannelError, ChannelTimeout
from ._protocol import get, protocol_error
from .errors import ReconError

log = logging.getLogger("recon")

PathLike = Union[str, "os.PathLike[str]"]
#: A progress callback: called with (bytes done, bytes in all) as a
#: transfer goes, at most every 1/8 s and once at the end.
Progress = Callable[[int, int], None]

DEFAULT_PORT = 60000
#: Bounds connecting and the handshake, in seconds.
DEFAULT_TIMEOUT = 15.0
#: A session ends when the server sends nothing for this long while an
#: answer is awaited; a server sends a waiting client the job's state at
#: least every 30 s.
DEFAULT_IDLE_TIMEOUT = 300.0
#: How many times submit reconnects and resumes a broken upload.
DEFAULT_RECONNECTS = 5
MAX_RECONNECT_DELAY = 30.0

_CHUNK = 1 << 20  # bytes read from a file, or from the channel, at a time
_OPTION_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_MAX_OPTIONS = 64
_MAX_OPTION_VALUE = 4 << 10
_MAX_OPTIONS_TOTAL = 32 << 10


@dataclass
class Result:
    """A file of a job: a result (or an input) with its size and SHA-256.
    ``path`` is where fetch wrote it, None before.

    ``sha256`` is 64 lower-case hex digits, or "" when the server gave
    none: an input file uploaded with BLAKE3 as the session's hash (by a
    client of protocol 3 that offered it, under the same identity) has no
    SHA-256 in job views. A result fetched by ``fetch`` always has one,
    checked against the bytes received."""

    name: str
    size: int
    sha256: str
    path: Optional[str] = None


@dataclass
class Job:
    """A job as the server reports it.

    ``state`` is one of queued, running, succeeded, failed, cancelled;
    ``error`` says why a job failed ("" otherwise); ``results`` is the
    result manifest of a finished job; ``files`` are its input files (an
    input's ``sha256`` is "" if it was uploaded with BLAKE3, see Result).
    ``raw`` is the whole job as it came over the wire (times, exit code,
    and fields of later versions).
    """

    id: str
    state: str
    error: str = ""
    results: List[Result] = field(default_factory=list)
    position: int = 0
    files: List[Result] = field(default_factory=list)
    options: Dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    exit_code: Optional[int] = None
    submitted_at: str = ""
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    submission_id: str = ""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.state in _protocol.TERMINAL

    @classmethod
    def _from_wire(cls, d: Any) -> "Job":
        if not isinstance(d, dict):
            raise protocol_error("a job that is not an object")
        state = get(d, "state", str, required=True)
        if state not in _protocol.STATES:
            raise protocol_error("a job in the unknown state %r" % state[:40])
        opts = get(d, "options", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items()):
            raise protocol_error("a job whose options are not strings")
        return cls(
            id=get(d, "job_id", str, required=True),
            state=state,
            error=get(d, "error", str, ""),
            results=[Result(n, s, h) for n, s, h in _protocol.file_sums(d.get("results"), "the job's results", True)],
            position=get(d, "position", int, 0),
            files=[Result(n, s, h) for n, s, h in _protocol.file_sums(d.get("files"), "the job's files", False)],
            options=dict(opts),
            attempts=get(d, "attempts", int, 0),
            exit_code=get(d, "exit_code", int),
            submitted_at=get(d, "submitted_at", str, ""),
            started_at=get(d, "started_at", str),
            finished_at=get(d, "finished_at", str),
            submission_id=get(d, "submission_id", str, ""),
            raw=d,
        )


class _Meter:
    """Counts bytes for a Progress callback, at most every 1/8 s."""

    def __init__(self, fn: Optional[Progress], total: int, done: int = 0) -> None:
        self.fn, self.total, self.done, self.last = fn, total, done, 0.0

    def add(self, n: int) -> None:
        self.done += n
        if self.fn is not None:
            now = time.monotonic()
            if self.done == self.total or now - self.last > 0.125:
                self.last = now
                self.fn(self.done, self.total)


class _BackendLost(ReconError):
    """unavailable during an upload: a relay lost the backend receiving
    it; submitting again goes to another backend."""


class _LocalFileError(Exception):
    """A local file changed while it was sent: retrying cannot help."""


def _check_options(options: Optional[Mapping[str, str]]) -> Dict[str, str]:
    if not options:
        return {}
    out: Dict[str, str] = {}
    seen = set()
    total = 0
    if len(options) > _MAX_OPTIONS:
        raise ValueError("%d options, at most %d" % (len(options), _MAX_OPTIONS))
    for k, v in options.items():
        if not isinstance(k, str) or not _OPTION_KEY.match(k):
            raise ValueError("option key %r: want 1 to 64 letters, digits or _" % (k,))
        if k.upper() in seen:
            raise ValueError("option key %r given twice (keys are compared in upper case)" % k)
        seen.add(k.upper())
        if not isinstance(v, str):
            raise ValueError("option %s: the value must be a str" % k)
        b = v.encode("utf-8")
        if len(b) > _MAX_OPTION_VALUE or "\x00" in v:
            raise ValueError("option %s: the value must be at most %d bytes, without NUL" % (k, _MAX_OPTION_VALUE))
        total += len(k) + len(b)
        out[k] = v
    if total > _MAX_OPTIONS_TOTAL:
        raise ValueError("options add up to %d bytes, at most %d" % (total, _MAX_OPTIONS_TOTAL))
    return out


class Client:
    """One session with a recon server (or relay).

    ``key`` is the shared key (``SHARED_KEY``) as ``recon keygen`` prints
    it. The constructor connects and authenticates: a wrong key fails here
    with a ReconError of code ``auth``. Requests run one at a time (the
    client is safe to share between threads, which then take turns); a
    request that fails leaves the client usable: the next one opens a new
    session. Use it as a context manager, or call close().

        with recon.Client("recon-host", 60000, key) as c:
            job = c.submit(["P00000.7"], options={"method": "pics"})
            job = c.wait(job.id)
            files = c.fetch(job.id, "images")
    """

    def __init__(self, host: str, port: int, key: Union[str, bytes], *, timeout: float = DEFAULT_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, reconnects: int = DEFAULT_RECONNECTS,
                 reconnect_delay: float = 1.0) -> None:
        self._key = _handshake.parse_key(key)
        self.host = host
        self.port = int(port)
        if not 0 < self.port < 65536:
            raise ValueError("port %d is not a TCP port" % self.port)
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.reconnects = reconnects
        self.reconnect_delay = reconnect_delay
        self._lock = threading.Lock()
        self._ch: Optional[Channel] = None
        self._closed = False
        # The server answered hello with bad_request: a version-2 server,
        # whose sessions use SHA-256 without hello.
        self._no_hello = False
        self._ch = self._dial()

    @classmethod
    def from_opts(cls, path: PathLike, **kwargs: Any) -> "Client":
        """A client for the server of a recon.opts file: its
        SERVER_HOSTNAME (default localhost), SERVER_PORT (default 60000)
        and SHARED_KEY. Keyword arguments are those of Client."""
        o = _opts.load(path)
        host = o.get("SERVER_HOSTNAME") or "localhost"
        port_s = o.get("SERVER_PORT") or str(DEFAULT_PORT)
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError("%s: SERVER_PORT %r is not a port a client can connect to" % (path, port_s))
        if "SHARED_KEY" not in o:
            raise ValueError("%s: SHARED_KEY is not set" % (path,))
        return cls(host.strip("[]"), int(port_s), o["SHARED_KEY"], **kwargs)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "recon.Client(%r, %d)" % (self.host, self.port)

    def close(self) -> None:
        """End the session. The client cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._drop(clean=True)

    # --- sessions

    def _dial(self) -> Channel:
        try:
            return Channel.connect(self.host, self.port, self._key, self.timeout, self.idle_timeout)
        except _handshake.HandshakeRefused as e:
            raise ReconError("auth", "connect to %s:%d: %s" % (self.host, self.port, e)) from None
        except _handshake.VersionMismatch as e:
            raise ReconError("version", "connect to %s:%d: %s" % (self.host, self.port, e)) from None
        except OSError as e:
            raise ReconError("connection", "connect to %s:%d: %s" % (self.host, self.port, e)) from None

    def _drop(self, clean: bool = False) -> None:
        ch, self._ch = self._ch, None
        if ch is None:
            return
        if clean:
            try:
                ch.close_write()
            except (ChannelError, OSError):
                pass
        ch.close()

    def _request(self, fn: Callable[[Channel], Any], transfer: bool = False) -> Any:
        """Run fn on the session, under the lock. Any failure ends the
        session (it may be out of step); the next request opens another.
        A session the server closed while it was idle (it closes sessions
        without a request for its IDLE_TIMEOUT_SECONDS) is replaced once,
        and fn run again: nothing of its reply had arrived. A transfer
        (submit, fetch) first agrees the session's hash (_hello)."""
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise ReconError("connection", "the client is closed")
                fresh = self._ch is None
                if fresh:
                    self._ch = self._dial()
                ch = self._ch
                assert ch is not None
                ch.settimeout(self.idle_timeout)
                before = ch.received
                try:
                    if transfer and ch.hash is None:
                        hc = self._hello(ch)
                        if hc is not ch:  # a version-2 server: a new session
                            ch, fresh = hc, True
                    return fn(ch)
                except ChannelTimeout as e:
                    self._drop()
                    raise ReconError("timeout", str(e)) from None
                except ChannelError as e:
                    self._drop()
                    if attempt == 1 and not fresh and ch.received == before:
                        log.debug("session to %s:%d was closed while idle (%s): reconnecting", self.host, self.port, e)
                        continue
                    raise ReconError("connection", "the connection to %s:%d broke: %s" % (self.host, self.port, e)) from None
                except BaseException:
                    self._drop()
                    raise
            raise AssertionError("unreachable")

    def _hello(self, ch: Channel) -> Channel:
        """Agree the session's end-to-end hash before its first transfer
        (docs/PROTOCOL.md, "hello"); return the session to go on with.

        The client offers only SHA-256, so the answer must be sha256; any
        other is a protocol error. A version-2 server knows no hello: it
        answers bad_request and closes the session. The client then opens
        a new session, which uses SHA-256 without hello, and sends no hello
        to this server again."""
        if self._no_hello:
            ch.hash = "sha256"
            return ch
        _protocol.write_message(ch, "hello", {"hashes": list(_protocol.HASHES)})
        try:
            rep = _protocol.expect(ch, "hello_reply")
        except ReconError as e:
            if e.code != "bad_request":
                raise
            log.debug("%s:%d does not know hello (%s): a version-2 server; using SHA-256",
                      self.host, self.port, e.message)
            self._no_hello = True
            self._drop()
            ch = self._ch = self._dial()
            ch.settimeout(self.idle_timeout)
            ch.hash = "sha256"
            return ch
        h = get(rep, "hash", str, required=True)
        get(rep, "protocol", int)
        if h not in _protocol.HASHES:
            raise protocol_error("hello_reply chose the hash %r, which this client did not offer (it offered %s)"
                                 % (h[:40], ", ".join(_protocol.HASHES)))
        ch.hash = h
        return ch

    # --- requests

    def status(self) -> Dict[str, Any]:
        """The server's status: version, protocol, uptime_seconds,
        started_at, jobs (a count by state) and max_workers."""
        return self._request(lambda ch: _protocol.call(ch, "status", {}, "status_reply"))

    def queue(self) -> List[Job]:
        """The jobs not finished, in queue order (running first), then
        those that finished in the last 24 hours."""
        def run(ch: Channel) -> List[Job]:
            body = _protocol.call(ch, "queue", {}, "queue_reply")
            jobs = get(body, "jobs", list, [])
            return [Job._from_wire(j) for j in jobs]
        return self._request(run)

    def job(self, job_id: str) -> Job:
        """One job's state. An unknown id is a ReconError of code
        ``not_found``."""
        def run(ch: Channel) -> Job:
            j = Job._from_wire(_protocol.call(ch, "job_status", {"job_id": job_id}, "job"))
            if j.id != job_id:
                raise protocol_error("job %r when %r was asked for" % (j.id, job_id))
            return j
        return self._request(run)

    def cancel(self, job_id: str) -> Job:
        """Cancel one's own job and return its state afterwards.

        A queued job is cancelled at once; a running one is stopped (its
        script gets SIGTERM, then SIGKILL after the server's grace). A job
        that has already ended is a ReconError of code ``conflict``;
        another identity's job, like an unknown id, one of code
        ``not_found``.
        """
        def run(ch: Channel) -> Job:
            rep = _protocol.call(ch, "cancel", {"job_id": job_id}, "cancel_reply")
            if _protocol.get(rep, "job_id", str, required=True) != job_id:
                raise protocol_error("a cancel reply for another job")
            return Job._from_wire(_protocol.call(ch, "job_status", {"job_id": job_id}, "job"))
        return self._request(run)

    def wait(self, job_id: str, on_event: Optional[Callable[[Job], None]] = None,
             timeout: Optional[float] = None) -> Job:
        """Follow a job until it ends and return its final state.

        on_event, if given, is called with every state the server reports
        (queued with its position, running, the end), and again now and
        then while nothing changes. With a timeout (seconds), a job that
        has not ended by then is a ReconError of code ``timeout`` (the job
        goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def run(ch: Channel) -> Job:
            _protocol.write_message(ch, "wait", {"job_id": job_id})
            while True:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ReconError("timeout", "job %s has not ended within %s s" % (job_id, timeout))
                    ch.settimeout(min(self.idle_timeout, left))
                try:
                    body = _protocol.expect(ch, "event")
                except ChannelTimeout:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise ReconError("timeout", "job %s has not ended within %s s" % (job_id, timeout)) from None
                    raise
                j = Job._from_wire(get(body, "job", dict, required=True))
                if j.id != job_id:
                    raise protocol_error("an event of job %r while waiting for %r" % (j.id, job_id))
                if on_event is not None:
                    on_event(j)
                if j.terminal:
                    return j
        return self._request(run)

    def submit(self, paths: Union[PathLike, Iterable[PathLike]], options: Optional[Mapping[str, str]] = None,
               progress: Optional[Progress] = None, *, submission_id: Optional[str] = None) -> Job:
        """Send the files as one job; return it once the server has stored
        and verified every file and queued the job.

        Names on the server are the files' base names, which must be
        distinct. options reach the reconstruction script as environment
        variables (RECON_OPT_<KEY>): keys of 1 to 64 letters, digits or _,
        values of at most 4 KiB. Each file is hashed as it is sent and
        checked by the server against its SHA-256.

        When the connection breaks or stalls, submit connects again and
        resumes: the server says how much of each file it kept and only
        the rest is sent (up to ``reconnects`` times, waiting
        ``reconnect_delay`` s, doubling, between tries). submission_id
        makes a retried submit idempotent; by default a random one is
        used.

        Raises ValueError for bad arguments, OSError for a file that cannot
        be read, ReconError for what the server refuses or a connection
        that cannot be resumed.
        """
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        plist = [os.fspath(p) for p in paths]
        if not plist:
            raise ValueError("submit: no files")
        opts = _check_options(options)
        sid = submission_id or "c-" + secrets.token_hex(16)
        stats = []
        files = []
        total = 0
        for p in plist:
            st = os.stat(p)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("submit: %s is not a regular file" % p)
            name = os.path.basename(p)
            _protocol.check_file_name(name)
            stats.append(st)
            files.append({"name": name, "size": st.st_size})
            total += st.st_size
        sub: Dict[str, Any] = {"submission_id": sid, "files": files}
        if opts:
            sub["options"] = opts
        delay = self.reconnect_delay
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._request(lambda ch: self._submit_once(ch, sub, plist, stats, total, progress),
                                     transfer=True)
            except ReconError as e:
                if self._closed or attempt > self.reconnects or not _resumable(e):
                    raise
                log.warning("upload to %s:%d broke (%s); resuming in %.0f s (%d of %d)",
                            self.host, self.port, e, delay, attempt, self.reconnects)
            except _LocalFileError as e:
                raise OSError(str(e)) from None
            time.sleep(delay)
            delay = min(2 * delay, MAX_RECONNECT_DELAY)

    def _submit_once(self, ch: Channel, sub: Dict[str, Any], paths: List[str], stats: List[os.stat_result],
                     total: int, progress: Optional[Progress]) -> Job:
        _protocol.write_message(ch, "submit", sub)
        ready = _protocol.expect(ch, "submit_ready")
        note = get(ready, "note", str, "")
        if note:
            log.info("server: %s", note)
        if get(ready, "existing", bool, False):
            return Job._from_wire(get(ready, "job", dict, required=True))
        resume = get(ready, "resume", list)
        files = sub["files"]
        if resume is not None:
            if len(resume) != len(files) or not all(
                    isinstance(o, int) and not isinstance(o, bool) and 0 <= o <= f["size"]
                    for o, f in zip(resume, files)):
                raise protocol_error("bad resume offsets")
        meter = _Meter(progress, total, sum(resume) if resume else 0)
        for i, p in enumerate(paths):
            off = resume[i] if resume else 0
            try:
                self._send_file(ch, p, stats[i], files[i]["size"], off, meter)
            except ChannelError:
                # The server may have said why it stopped reading.
                raise _server_reason(ch) from None
        try:
            return Job._from_wire(_protocol.expect(ch, "job"))
        except ReconError as e:
            raise _backend_lost(e) from None

    def _send_file(self, ch: Channel, path: str, st: os.stat_result, size: int, off: int, meter: _Meter) -> None:
        h = hashlib.sha256()
        # One buffer for the whole file: a fresh 1 MiB for each read costs
        # page faults that take longer than the copy.
        buf = bytearray(min(max(size, 1), _CHUNK))
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            now = os.fstat(f.fileno())
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise _LocalFileError("%s was replaced after the job was announced" % path)
            left = off
            while left:
                n = f.readinto(view[:min(left, len(buf))])
                if not n:
                    raise _LocalFileError("%s shrank while it was sent" % path)
                h.update(view[:n])
                left -= n
            left = size - off
            while left:
                n = f.readinto(view[:min(left, len(buf))])
                if not n:
                    raise _LocalFileError("%s shrank while it was sent" % path)
                h.update(view[:n])
                ch.write(view[:n])
                left -= n
                meter.add(n)
            if os.fstat(f.fileno()).st_size != size:
                raise _LocalFileError("%s changed size while it was sent" % path)
        _protocol.write_message(ch, "file_done", {"sha256": h.hexdigest()})

    def fetch(self, job_id: str, output_dir: PathLike, progress: Optional[Progress] = None) -> List[Result]:
        """Download the results of a finished job into output_dir, check
        each file's size and SHA-256, then confirm receipt so the server
        deletes them. Return the files with their paths.

        Files are written into a fresh directory beside output_dir and
        moved into place only once all are verified; output_dir is created
        if needed, and files of the same name in it are replaced. A job
        that has not finished is a ReconError of code ``not_finished``
        (wait first); results already fetched are ``gone``."""
        out_dir = os.path.abspath(os.fspath(output_dir))

        def run(ch: Channel) -> List[Result]:
            _protocol.write_message(ch, "fetch", {"job_id": job_id})
            body = _protocol.expect(ch, "results")
            job = Job._from_wire(get(body, "job", dict, required=True))
            if job.id != job_id:
                raise protocol_error("the results of job %r when %r was asked for" % (job.id, job_id))
            # Each file must carry sha256, and the bytes are checked against
            # it: this client's sessions all use SHA-256 (it offers nothing
            # else in hello). A "blake3" beside it belongs only to a session
            # that chose BLAKE3, so a server that sends one is not in the
            # session agreed: refused before a byte is written (fail
            # closed, as TLS refuses an extension it did not ask for, and
            # as the Go client does). Ignoring it would not weaken the
            # SHA-256 check, but would hide a confused server; refusing
            # costs nothing kept: no ack is sent, the results stay.
            raw_files = get(body, "files", list, required=True)
            files = _protocol.file_sums(raw_files, "the result manifest", True)
            if ch.hash != "blake3":
                for f in raw_files:
                    if "blake3" in f:
                        raise protocol_error("the result manifest gives a BLAKE3 for %r in a session that uses %s"
                                             % (f["name"][:80], ch.hash))
            seen = set()
            for name, _, sha in files:
                if not _protocol.valid_sha256(sha):
                    raise protocol_error("the result manifest has no SHA-256 for %r" % name)
                folded = name.casefold()
                if folded in seen or any(folded.startswith(s + "/") or s.startswith(folded + "/") for s in seen):
                    raise protocol_error("the result manifest names %r twice, or as a file and a directory" % name)
                seen.add(folded)
            total = sum(s for _, s, _ in files)
            parent = os.path.dirname(out_dir)
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".fetch-", dir=parent)
            try:
                meter = _Meter(progress, total)
                for name, size, sha in files:
                    _receive_file(ch, tmp, name, size, sha, meter)
                # Every file is verified: move them into place, then
                # confirm (the server keeps them until then).
                out = []
                for name, size, sha in files:
                    dst = os.path.join(out_dir, *name.split("/"))
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    os.replace(os.path.join(tmp, *name.split("/")), dst)
                    out.append(Result(name, size, sha, dst))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            done = _protocol.call(ch, "ack", {"job_id": job_id}, "ack_done")
            if done.get("job_id") != job_id:
                raise protocol_error("ack_done for job %r" % (done.get("job_id"),))
            return out
        return self._request(run, transfer=True)


def _receive_file(ch: Channel, root: str, name: str, size: int, sha: str, meter: _Meter) -> None:
    parts = name.split("/")
    d = os.path.join(root, *parts[:-1])
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, parts[-1])
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb", buffering=0) as f:
        h = hashlib.sha256()
        left = size
        written = flushed = 0
        # Records carry 32 KiB: gather up to _CHUNK bytes per write, in one
        # buffer for the whole file (a fresh 1 MiB each time costs page
        # faults that take longer than the copy).
        buf = bytearray(min(size, _CHUNK))
        view = memoryview(buf)
        while left:
            n = 0
            while left and n < len(buf):
                b = ch.read(min(left, len(buf) - n))
                if not b:
                    raise ChannelError("the server ended the stream in the middle of %s" % name)
                h.update(b)
                view[n:n + len(b)] = b
                n += len(b)
                left -= len(b)
            f.write(view[:n])
            written += n
            meter.add(n)
            if written - flushed >= _WRITEBACK:
                _start_writeback(fd, flushed, written - flushed)
                flushed = written
        if h.hexdigest() != sha:
            raise ReconError("hash_mismatch", "result %s: SHA-256 %s, the manifest says %s" % (name, h.hexdigest(), sha))
        os.fsync(f.fileno())


#: Written bytes after which the kernel is asked to start writing them back,
#: so that the fsync at the end of a file has little left to wait for (as
#: the Go client does with sync_file_range).
_WRITEBACK = 16 << 20


def _start_writeback(fd: int, off: int, n: int) -> None:
    # On Linux, POSIX_FADV_DONTNEED starts the write-back of the range's
    # dirty pages without waiting for it, and drops its clean ones from the
    # page cache. Elsewhere nothing is done: the final fsync writes all.
    fadvise = getattr(os, "posix_fadvise", None)
    if fadvise is not None:
        try:
            fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _resumable(e: ReconError) -> bool:
    """Whether a failed submit may be resumed on a new session: the
    connection broke or stalled, or a relay lost the backend receiving the
    upload."""
    return isinstance(e, _BackendLost) or e.code in ("connection", "timeout")


def _backend_lost(e: ReconError) -> ReconError:
    if e.code == "unavailable" and not isinstance(e, _BackendLost):
        return _BackendLost(e.code, e.message)
    return e


def _server_reason(ch: Channel) -> ReconError:
    """After a failed send: the server's error if it sent one before it
    closed, else a broken connection."""
    try:
        ch.settimeout(2.0)
        _protocol.read_message(ch)
    except ReconError as e:
        if e.code != "protocol":
            return _backend_lost(e)
    except ChannelError:
        pass
    return ReconError("connection", "the connection broke during the upload")
