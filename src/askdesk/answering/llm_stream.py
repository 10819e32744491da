"""One HTTP request to an LLM server that can be cancelled: its reply is read before a deadline, and
leaving early closes the connection, which is how a server learns to stop generating.

`post` sends the request with urllib (proxies from the environment, as `urlopen`) and returns a
`Stream`: the reply's lines (what `generate.sse_events` reads) or its whole body, each socket read
given only the time left until ``timeout`` seconds after the request began. A socket timeout alone
bounds each read, not the reply: a model writing a word a second would hold a 30 s request for as
long as it writes. Closing the stream (the end of a ``with`` block, whatever ended it: the
deadline, Ctrl-C, a consumer that closed its generator) closes the socket at once; llama.cpp's
server notices on its next streamed token and stops, which it cannot do for a non-streamed reply
it is still computing.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

READ_BYTES = 64 * 1024  # one socket read at most: a streamed token is ~150 bytes of JSON


class _Deadline(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """urllib's http(s) handler, keeping the request's socket and giving it only the time left."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline, self.sock = deadline, None

    def left(self) -> float:
        """Seconds left; TimeoutError once there are none."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def do_open(self, http_class, req, **kwargs):  # http_open and https_open, as urllib's own handlers
        handler = self

        class Kept(http_class):
            def connect(self):
                super().connect()
                self.sock.settimeout(handler.left())  # the reply's headers wait no longer than the deadline
                handler.sock = self.sock

        return super().do_open(Kept, req, **kwargs)


class Stream:
    """An open reply: iterate for its lines, or `read` it whole, before the deadline; `close` hangs up."""

    def __init__(self, resp, handler: _Deadline):
        self._resp, self._handler = resp, handler
        self.content_type = resp.headers.get("Content-Type", "")

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read1(self) -> bytes:
        if self._handler.sock is not None:
            self._handler.sock.settimeout(self._handler.left())
        return self._resp.read1(READ_BYTES)

    def __iter__(self) -> Iterator[bytes]:
        rest = b""
        while chunk := self._read1():
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest

    def read(self) -> bytes:
        return b"".join(iter(self._read1, b""))

    def close(self) -> None:
        """Close the reply and its socket now (idempotent): the server sees the connection end."""
        self._resp.close()
        sock = self._handler.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the FIN goes out even if something else holds the socket
            except OSError:  # already closed, or the server closed it first
                pass
            sock.close()


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Stream:
    """POST ``body`` to ``url``; the reply as a `Stream` that must be read within ``timeout`` seconds of now.

    Raises what urllib raises: HTTPError for an HTTP error status, URLError or OSError when the
    server cannot be reached, TimeoutError when the deadline passes (reading the `Stream` too).
    """
    handler = _Deadline(time.monotonic() + timeout)
    request = urllib.request.Request(url, body, headers, method="POST")
    resp = urllib.request.build_opener(handler).open(request, timeout=timeout)
    return Stream(resp, handler)
