"""A small HTTP/1.1 keep-alive client for the load generator: one connection, one request at
a time, responses parsed by httptools (llhttp, C).

httpx's async client cost the generator about 3 ms of CPU per request (its pure-Python
HTTP parser, and a connection pool scanned per request), more than either server spent: at
64 and 128 clients the two generator processes used most of the 2 cores and held both
servers down. This one costs a fraction of that, so the servers, not the generator, set
the pace. Both servers are measured through it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from dataclasses import dataclass

import httptools


class HttpError(Exception):
    """A transport failure: connection refused or reset, a timeout, an unreadable answer."""


@dataclass
class Answer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Parsed:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class Connection:
    """One kept-alive connection to `base` (http://host:port/path), reopened after an error."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float = 60.0) -> None:
        url = urllib.parse.urlsplit(base.rstrip("/"))
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"not an http:// base URL: {base!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path
        self.timeout = timeout
        fixed = {"Host": f"{self.host}:{self.port}", **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", query: dict[str, str] | None = None
    ) -> Answer:
        target = f"{self.prefix}/{path}"
        if query:
            target += "?" + urllib.parse.urlencode(query)
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + self._head
        if body or method in ("POST", "PUT"):
            head += f"Content-Length: {len(body)}\r\n".encode("latin-1")
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(head + b"\r\n" + body)
        except (OSError, TimeoutError, httptools.HttpParserError, HttpError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, data: bytes) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(data)
        parsed = _Parsed()
        parser = httptools.HttpResponseParser(parsed)
        while not parsed.done:
            chunk = await self._reader.read(65536)
            if not chunk:
                raise HttpError("the server closed the connection")
            parser.feed_data(chunk)
        if not parser.should_keep_alive():
            await self.close()
        return Answer(parser.get_status_code(), b"".join(parsed.chunks))

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
