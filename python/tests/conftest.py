"""Fixtures: the recon binary of this tree, and a real `recon server` on
127.0.0.1 with fresh keys in a temporary directory."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# scripts/python-test.sh installs the package and tests that copy;
# otherwise the tests use the source tree.
INSTALLED = os.environ.get("RECON_TEST_INSTALLED")
if not INSTALLED:
    sys.path.insert(0, os.path.join(REPO, "python"))

STRICT = os.environ.get("RECON_TEST_STRICT") == "1"

# The reconstruction script of the tests: every input comes back under
# copy/, with sums.txt; option fail=1 makes the job fail.
SCRIPT = r"""#!/bin/sh
set -eu
in=$1; out=$3
if [ "${RECON_OPT_FAIL:-}" = 1 ]; then echo "failed on purpose" >&2; exit 3; fi
if [ -n "${RECON_OPT_SLEEP:-}" ]; then sleep "$RECON_OPT_SLEEP"; fi
mkdir -p "$out/copy"
cp "$in"/* "$out/copy/"
(cd "$in" && sha256sum -- *) > "$out/sums.txt"
"""


def pytest_report_header(config):
    import recon
    return "recon package: %s" % os.path.dirname(recon.__file__)


def _missing(what):
    if STRICT:
        pytest.fail("strict mode (RECON_TEST_STRICT=1): %s" % what)
    pytest.skip(what)


@pytest.fixture(scope="session")
def recon_bin(tmp_path_factory):
    """$RECON_BIN, else bin/recon of the tree built now."""
    b = os.environ.get("RECON_BIN")
    if b:
        return os.path.abspath(b)
    go = shutil.which("go")
    if go is None:
        _missing("no RECON_BIN and no go to build recon")
    out = str(tmp_path_factory.mktemp("bin") / "recon")
    subprocess.run([go, "build", "-o", out, "./cmd/recon"], cwd=REPO, check=True, timeout=600)
    return out


def keygen(recon_bin):
    return subprocess.run([recon_bin, "keygen"], capture_output=True, text=True, check=True, timeout=30).stdout.strip()


class Server:
    def __init__(self, proc, host, port, key, opts, dir):
        self.proc, self.host, self.port, self.key, self.opts, self.dir = proc, host, port, key, opts, dir
        self.err = []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(recon_bin, d, extra=()):
    key = keygen(recon_bin)
    script = os.path.join(d, "script.sh")
    with open(script, "w") as f:
        f.write(SCRIPT)
    os.chmod(script, 0o755)
    opts = os.path.join(d, "recon.opts")
    with open(opts, "w") as f:
        f.write("\n".join([
            "SERVER_HOSTNAME = 127.0.0.1", "SERVER_PORT = 0", "SHARED_KEY = " + key,
            "SERVER_ADMIN_HOSTNAME = 127.0.0.1", "SERVER_ADMIN_PORT = 0",
            "SERVER_ADMIN_SHARED_KEY = " + keygen(recon_bin), "TRUSTED_IPS = 127.0.0.1",
            "RECON_SCRIPT_PATH = " + script,
            "RECON_SERVER_BASE_PFILE_DIR = data/inputs", "RECON_JOB_OUTPUT_BASE_DIR = data/outputs",
            "RECON_SERVER_STATE_DIR = data/state", "LOG_FILEPATH = recon.log",
            "MIN_FREE_DISK_MB = 16", "MAX_CONCURRENT_JOBS = 2",
            "MAX_CPU_LOAD_PERCENT = 100", "MIN_AVAILABLE_MEMORY_MB = 0", *extra]) + "\n")
    os.chmod(opts, 0o600)
    return _start(recon_bin, ["server", "--opts", opts], d, key, opts)


def start_relay(recon_bin, d, backend, backend_key):
    """`recon relay` in directory d on 127.0.0.1, in front of the server
    backend (a Server) reached with backend_key; its client key is .key."""
    key = keygen(recon_bin)
    opts = os.path.join(d, "relay.opts")
    with open(opts, "w") as f:
        f.write("\n".join([
            "RELAY_HOSTNAME = 127.0.0.1", "RELAY_PORT = 0", "RELAY_ADMIN_PORT = 0",
            "SHARED_KEY_RELAY_TO_CLIENTS = " + key, "RELAY_ADMIN_SHARED_KEY = " + keygen(recon_bin),
            "BACKEND_SHARED_KEY = " + backend_key, "BACKEND_SERVERS = %s:%d" % (backend.host, backend.port),
            "BACKEND_HEALTH_INTERVAL_SECONDS = 0.25", "TRUSTED_CLIENT_IPS = 127.0.0.1",
            "RELAY_STATE_DIR = relay_state", "LOG_FILEPATH = relay.log"]) + "\n")
    os.chmod(opts, 0o600)
    return _start(recon_bin, ["relay", "--opts", opts], d, key, opts)


def _start(recon_bin, args, d, key, opts):
    proc = subprocess.Popen([recon_bin, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=d)
    lines = []
    found = threading.Event()
    addr = []

    def pump():
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"clients on (\S+), admin on", line)
            if m and not addr:
                addr.append(m.group(1))
                found.set()
        found.set()
    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(60) or not addr:
        proc.kill()
        proc.wait(10)
        raise RuntimeError("recon %s did not start:\n%s" % (args[0], "".join(lines)))
    host, port = addr[0].rsplit(":", 1)
    s = Server(proc, host.strip("[]"), int(port), key, opts, d)
    s.err = lines
    return s


@pytest.fixture
def server(recon_bin, tmp_path):
    d = str(tmp_path / "server")
    os.makedirs(d)
    s = start_server(recon_bin, d)
    yield s
    s.stop()


def deadline_poll(cond, timeout=30.0, step=0.02):
    """Poll cond until it is true or timeout seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False
