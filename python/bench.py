#!/usr/bin/env python3
"""Upload and download speed of the Python client beside the Go client.

Starts a local `recon server` (bin/recon of this tree, or --recon) on
127.0.0.1 with fresh keys, whose script returns every input as a result,
and for each run moves one file of --size-mib MiB up and back down:

  python  upload: recon.Client.submit      download: recon.Client.fetch
  go      upload: recon submit --no-wait   download: recon fetch

Prints the median MiB/s of each, and the CPU time per MiB of the client
(this process for Python, the recon child for Go). Not part of `make test`.

    make build && /usr/bin/python3 python/bench.py --size-mib 512 --runs 3
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "tests"))

import recon  # noqa: E402
from conftest import start_server  # noqa: E402


def cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def make_file(path, size):
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--recon", default=os.path.join(REPO, "bin", "recon"))
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    a = ap.parse_args()
    recon_bin = os.path.abspath(a.recon)
    work = tempfile.mkdtemp(prefix="recon-pybench-", dir=a.dir)
    srv = None
    try:
        os.makedirs(os.path.join(work, "server"))
        srv = start_server(recon_bin, os.path.join(work, "server"))
        opts = os.path.join(work, "client.opts")
        with open(opts, "w") as f:
            f.write("SERVER_HOSTNAME = %s\nSERVER_PORT = %d\nSHARED_KEY = %s\n" % (srv.host, srv.port, srv.key))
        size = a.size_mib << 20
        src = os.path.join(work, "P00000.7")
        make_file(src, size)
        mib = size / (1 << 20)
        rates = {k: [] for k in ("python upload", "python download", "go upload", "go download")}
        cpu = {k: [] for k in rates}
        c = recon.Client(srv.host, srv.port, srv.key)
        for run in range(a.runs):
            # Python.
            t, u = time.monotonic(), cpu_self()
            job = c.submit([src])
            rates["python upload"].append(mib / (time.monotonic() - t))
            cpu["python upload"].append((cpu_self() - u) / mib)
            c.wait(job.id)
            out = os.path.join(work, "out-py-%d" % run)
            t, u = time.monotonic(), cpu_self()
            c.fetch(job.id, out)
            rates["python download"].append(mib / (time.monotonic() - t))
            cpu["python download"].append((cpu_self() - u) / mib)
            shutil.rmtree(out)
            # Go.
            t, u = time.monotonic(), cpu_children()
            p = subprocess.run([recon_bin, "submit", "--no-wait", "--json", "--opts", opts, src],
                               capture_output=True, text=True, check=True)
            rates["go upload"].append(mib / (time.monotonic() - t))
            cpu["go upload"].append((cpu_children() - u) / mib)
            job_id = json.loads(p.stdout)["job_id"]
            c.wait(job_id)
            out = os.path.join(work, "out-go-%d" % run)
            t, u = time.monotonic(), cpu_children()
            subprocess.run([recon_bin, "fetch", job_id, "--output", out, "--opts", opts],
                           capture_output=True, check=True)
            rates["go download"].append(mib / (time.monotonic() - t))
            cpu["go download"].append((cpu_children() - u) / mib)
            shutil.rmtree(out)
        c.close()
        print("%d MiB file, %d runs, loopback, medians (one result file of the same size comes back)" % (a.size_mib, a.runs))
        print("%-16s %10s %14s" % ("", "MiB/s", "CPU ms/MiB"))
        for k in rates:
            print("%-16s %10.0f %14.2f" % (k, statistics.median(rates[k]), 1000 * statistics.median(cpu[k])))
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
