"""A limit on the request head (request line and headers) for `fhircare serve`.

uvicorn's httptools parser buffers headers of any size (a 3 MB Authorization header is
read whole), and its h11 parser answers a head beyond its buffer limit with a plain-text
400. With these protocols, a head beyond FHIRCARE_MAX_HEADER_BYTES is answered
`431 Request Header Fields Too Large` (RFC 6585) with an OperationOutcome, and the
connection is closed: the application never sees the request.

Both extend uvicorn's own protocol classes at their one error seam (`send_400_response`,
which uvicorn calls while handling the parser's error), so everything else is uvicorn's.
Under granian, whose Rust parser has no such seam, `HeadLimit` counts the head the ASGI
scope carries and answers the same 431 before the application sees the request.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

STATUS_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


class HeadTooLarge(Exception):
    """The request line and headers exceed the limit."""


def _outcome_431(limit: int) -> bytes:
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "too-long",
                    "diagnostics": f"The request line and headers exceed {limit} bytes "
                    "(FHIRCARE_MAX_HEADER_BYTES)",
                }
            ],
        }
    ).encode()


def response_431(limit: int) -> bytes:
    """The whole 431 answer: status line, headers and an OperationOutcome body."""
    body = _outcome_431(limit)
    return b"".join(
        [
            STATUS_431,
            b"content-type: application/fhir+json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def _refuse(transport: asyncio.Transport, limit: int) -> None:
    if not transport.is_closing():
        transport.write(response_431(limit))
        transport.close()


class LimitedH11Protocol(H11Protocol):
    """h11, whose receive-buffer limit is the head limit (uvicorn passes
    `h11_max_incomplete_event_size`; h11 marks that error with status hint 431) for a head
    arriving over several reads, plus a count of the head that arrives in one."""

    max_head_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # reading a request head
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > self.max_head_bytes:
                _refuse(self.transport, self.max_head_bytes)
                return
            if end >= 0:
                self._head_bytes = 0
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, h11.RemoteProtocolError) and exc.error_status_hint == 431:
            _refuse(self.transport, self.max_head_bytes)
            return
        super().send_400_response(msg)


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    try:
        import httptools  # noqa: F401 - the parser HttpToolsProtocol drives
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """httptools, counting the head's bytes: while the headers are incomplete after a
        read (a head arriving over several reads, even one endless header), and header
        by header (a head arriving in one read)."""

        max_head_bytes = 32 * 1024

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0  # bytes read while the head is incomplete
            self._head_counted = 0  # bytes of request line and headers parsed
            self._in_head = True
            self._too_large = False

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > self.max_head_bytes:
                _refuse(self.transport, self.max_head_bytes)

        def on_message_begin(self) -> None:
            self._in_head = True
            self._head_bytes = 0
            self._head_counted = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # "name: value\r\n"
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def _count(self, size: int) -> None:
            self._head_counted += size
            if self._head_counted > self.max_head_bytes:
                self._too_large = True
                raise HeadTooLarge  # httptools turns it into HttpParserCallbackError

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                _refuse(self.transport, self.max_head_bytes)
                return
            super().send_400_response(msg)

    return LimitedHttpToolsProtocol


def limited_protocol(http: str, max_head_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's `http` protocol class ("httptools" or "h11") with the head limit."""
    base = _httptools_protocol() if http == "httptools" else None
    if base is None:
        base = LimitedH11Protocol
    return type(base.__name__, (base,), {"max_head_bytes": max_head_bytes})


class HeadLimit:
    """ASGI middleware: an HTTP request whose request line and headers, counted as sent
    (`name: value` plus CRLF per header), exceed `max_head_bytes` is answered 431 with the
    OperationOutcome and `connection: close`, and never reaches `app`."""

    def __init__(self, app: Any, max_head_bytes: int) -> None:
        self.app = app
        self.max_head_bytes = max_head_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _head_bytes(scope) > self.max_head_bytes:
            body = _outcome_431(self.max_head_bytes)
            headers = [
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 431, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _head_bytes(scope: dict[str, Any]) -> int:
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
    line = len(scope["method"]) + target + 13  # 2 spaces, "?", "HTTP/1.1", CRLF
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


__all__ = [
    "HeadLimit",
    "HeadTooLarge",
    "LimitedH11Protocol",
    "limited_protocol",
    "response_431",
]
