"""The exception of the recon client."""

from __future__ import annotations


class ReconError(Exception):
    """A request failed. ``code`` says why, for programs:

    - a code of the protocol, sent by the server: ``bad_request``,
      ``not_found``, ``invalid_name``, ``too_large``, ``no_space``,
      ``queue_full``, ``hash_mismatch``, ``not_finished``, ``gone``,
      ``conflict``, ``unavailable`` (from a relay), ``timeout`` (a transfer
      stalled or was too slow), ``internal``;
    - or one of the client's own: ``auth`` (the server closed the handshake
      without answering: wrong key, wrong port, address not allowed, or a
      busy server), ``connection`` (the connection broke or could not be
      opened), ``version`` (the server speaks another channel version),
      ``protocol`` (the server sent something the protocol does not
      allow, such as a hello_reply choosing a hash not offered, or a
      result manifest giving a BLAKE3), ``hash_mismatch`` (a fetched
      file's SHA-256 differs from the manifest), ``timeout`` (wait's
      timeout passed, or the server was silent for the idle timeout),
      ``not_implemented``.

    ``message`` is the human explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return "%s (%s)" % (self.message, self.code)

    def __repr__(self) -> str:
        return "ReconError(%r, %r)" % (self.code, self.message)
