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
import json as _json
import select
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

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
        self.keep_alive = True
        self.parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        # asked here: once the message is complete, llhttp has reset and answers False
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def _header_lines(headers: dict[str, str]) -> bytes:
    """Header lines of a request head, each ending in CRLF."""
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")


def _message(method: str, target: str, header_lines: bytes, body: bytes) -> bytes:
    """A whole HTTP/1.1 request: its line, the headers, Content-Length where a body is or a
    POST/PUT has none, the blank line and the body."""
    head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + header_lines
    if body or method in ("POST", "PUT"):
        head += f"Content-Length: {len(body)}\r\n".encode("latin-1")
    return head + b"\r\n" + body


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
        self._head = _header_lines({"Host": f"{self.host}:{self.port}", **headers})
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", query: dict[str, str] | None = None
    ) -> Answer:
        target = f"{self.prefix}/{path}"
        if query:
            target += "?" + urllib.parse.urlencode(query)
        data = _message(method, target, self._head, body)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(data)
        except (OSError, TimeoutError, httptools.HttpParserError, HttpError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, data: bytes) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(data)
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)
        while not parsed.done:
            chunk = await self._reader.read(65536)
            if not chunk:
                raise HttpError("the server closed the connection")
            parser.feed_data(chunk)
        if not parsed.keep_alive:
            await self.close()
        return Answer(parser.get_status_code(), b"".join(parsed.chunks))

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Reply:
    """What `SyncClient.request` answers: the parts of an httpx.Response the benchmarks use."""

    __slots__ = ("status_code", "content", "url")

    def __init__(self, status_code: int, content: bytes, url: str) -> None:
        self.status_code = status_code
        self.content = content
        self.url = url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.content)


class SyncClient:
    """A blocking client for one-client benchmarks: the same HTTP/1.1 requests and httptools
    parsing as `Connection`, on a plain socket (TCP_NODELAY) and without an event loop, one
    kept-alive connection per host and headers, reopened after an error. The call shape of
    `httpx.Client.request(method, url, headers=, json=, params=)` for what the benchmarks
    send, at about 0.05 ms of its own CPU a request against httpx's 0.3 ms and more. Request
    bodies are encoded with `json.dumps`, as httpx does."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._sockets: dict[tuple[str, int], socket.socket] = {}

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        json: Any = None,  # httpx's name
        params: dict[str, str] | None = None,
    ) -> Reply:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {url!r}")
        host, port = parts.hostname, parts.port or 80
        target = parts.path or "/"
        query = parts.query
        if params:
            query = (query + "&" if query else "") + urllib.parse.urlencode(params)
        if query:
            target += "?" + query
        body = b"" if json is None else _json.dumps(json).encode("utf-8")
        fixed = {"Host": f"{host}:{port}", **(headers or {})}
        data = _message(method, target, _header_lines(fixed), body)
        try:
            status, content = self._exchange((host, port), data)
        except (OSError, httptools.HttpParserError, HttpError) as exc:
            self._drop((host, port))
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        return Reply(status, content, f"http://{parts.netloc}{target}")

    def _exchange(self, address: tuple[str, int], data: bytes) -> tuple[int, bytes]:
        sock = self._sockets.get(address)
        if sock is not None and _readable(sock):  # closed by the server while idle (as httpx
            self._drop(address)  # checks before reusing a connection): open a new one
            sock = None
        if sock is None:
            sock = socket.create_connection(address, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets[address] = sock
        sock.sendall(data)
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)
        while not parsed.done:
            chunk = sock.recv(65536)
            if not chunk:
                raise HttpError("the server closed the connection")
            parser.feed_data(chunk)
        if not parsed.keep_alive:
            self._drop(address)
        return parser.get_status_code(), b"".join(parsed.chunks)

    def _drop(self, address: tuple[str, int]) -> None:
        sock = self._sockets.pop(address, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for address in list(self._sockets):
            self._drop(address)


def _readable(sock: socket.socket) -> bool:
    """Whether an idle kept-alive socket has something to read: the server's close (EOF) or
    bytes no request asked for; either way it is not fit for the next request."""
    return bool(select.select([sock], [], [], 0)[0])
