"""Run the reward server with uvicorn, plus a deadline for request headers.

uvicorn drops idle keep-alive connections but waits forever for a client that sends its headers
a byte at a time: 50 such connections were held for 30 s, each one a socket and a slot of
uvicorn's connection limit. Here a request's headers must be complete within `read_timeout_s`
of its first byte (of the connection, for the first request); the body then gets the same time
(`limits.BodyLimits`).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("synpref.serve")

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def header_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools or h11, as uvicorn picks) with a header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadline(AutoHTTPProtocol):
        # Both uvicorn protocols set `self.cycle` to a new request cycle once headers are complete.
        _deadline: asyncio.TimerHandle | None = None
        _cycle_before = None  # the cycle current when the deadline was set

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # The first bytes of the next request on a kept-alive connection start its deadline.
            if self._deadline is None and self.cycle is not None and self.cycle.response_complete:
                self._start_deadline()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _start_deadline(self) -> None:
            self._cycle_before = self.cycle
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._cycle_before and not self.transport.is_closing():
                log.info("dropped a connection from %s: no complete request headers within %g s", self.client, timeout_s)
                self.transport.write(_TIMED_OUT)
                self.transport.close()

    return HeaderDeadline


def run(app, *, host: str, port: int, read_timeout_s: float) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", http=header_deadline_protocol(read_timeout_s))
