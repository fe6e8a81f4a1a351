"""One socket write per response where uvicorn makes two.

uvicorn's httptools protocol writes a response's head (status line and headers) as soon as
the app sends `http.response.start`, and the body as a second write: two `send` calls,
two TCP segments, for a FHIR answer of a few kilobytes. `HeadHeldTransport` stands between
one request's cycle and the connection: it holds the cycle's first write (the head, or a
`100 Continue`) and sends it joined to the next write, which follows in the same event loop
step for a plain response. A head not followed by a write in that step (a streamed body
still being produced) goes out on the loop's next iteration, as does one before a close.
"""

from __future__ import annotations

import asyncio
from typing import Any

JOIN_LIMIT = 256 * 1024  # larger bodies are written after the head, not copied behind it


class HeadHeldTransport:
    """The connection's transport as one request/response cycle sees it (see module doc)."""

    __slots__ = ("_transport", "_loop", "_held", "_first")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self._flush)
            return
        held, self._held = self._held, None
        if held is not None:
            if len(data) <= JOIN_LIMIT:
                data = held + data
            else:
                self._write(held)
        self._write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._write(held)

    def _write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
