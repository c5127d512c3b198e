"""recon: the Python client of recon, the secure remote reconstruction
server for MRI.

It speaks recon's protocol natively (docs/PROTOCOL.md in the recon
repository; application protocol 3, PROTOCOL_VERSION, over channel
version 2): a Noise NNpsk0 handshake and AES-256-GCM records over TCP,
with ``cryptography`` for X25519, AES-GCM and HKDF.

    import recon

    with recon.Client.from_opts("recon.opts") as c:   # or recon.Client(host, port, key)
        job = c.submit(["P00000.7"], options={"method": "pics"})
        job = c.wait(job.id, on_event=lambda j: print(j.state))
        for r in c.fetch(job.id, "images"):
            print(r.name, r.size, r.path)
"""

from .client import Client, Job, Progress, Result
from .errors import ReconError
from ._protocol import VERSION as PROTOCOL_VERSION

__all__ = ["Client", "Job", "Result", "ReconError", "Progress", "PROTOCOL_VERSION", "__version__"]
__version__ = "0.1.0"
