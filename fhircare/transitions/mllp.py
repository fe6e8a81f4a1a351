"""MLLP (Minimal Lower Layer Protocol) framing and an asyncio MLLP server.

A message travels as <VT> payload <FS><CR>. The server hands each raw ER7 payload to an
async handler and writes back the framed bytes it returns (the ACK). Logs carry peer
addresses and sizes only, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

START = b"\x0b"  # VT
END = b"\x1c\x0d"  # FS CR
FS = b"\x1c"
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
READ_CHUNK = 65_536

Handler = Callable[[bytes], Awaitable[bytes]]


class MllpError(Exception):
    """A framing problem (oversized message)."""


class MessageTooLarge(MllpError):
    """A message grew past the decoder's limit; its bytes are discarded up to its end."""

    def __init__(self, limit: int, head: bytes) -> None:
        super().__init__(f"MLLP message larger than {limit} bytes")
        self.head = head  # the first bytes, enough to read MSH for a rejecting ACK


def frame(msg: bytes) -> bytes:
    """Wrap one payload in MLLP start/end blocks."""
    return START + msg + END


class MllpDecoder:
    """Streaming de-framer: feed it reads, get complete payloads back.

    Handles payloads split across reads, several in one read, bytes outside a frame (junk,
    dropped) and a start block inside a frame (the truncated message is dropped). A payload
    over `max_message_bytes` raises MessageTooLarge once; the rest of it is skipped.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._in_frame = False
        self._skipping = False
        self.discarded = 0  # junk bytes dropped so far
        self._cr_due = False  # the last read ended on FS: its CR may open the next read

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos = 1 if self._cr_due and data[:1] == b"\r" else 0
        self._cr_due = False
        while pos < len(data):
            if not self._in_frame:
                start = data.find(START, pos)
                if start < 0:
                    self.discarded += len(data) - pos
                    break
                self.discarded += start - pos
                self._in_frame, self._skipping = True, False
                self._buf.clear()
                pos = start + 1
                continue
            end = data.find(FS, pos)
            restart = data.find(START, pos)
            if restart >= 0 and (end < 0 or restart < end):
                # New start block before the end block: the pending message was cut short.
                log.warning("MLLP start block inside a frame; dropped %d bytes", len(self._buf))
                self.discarded += len(self._buf) + (restart - pos)
                self._in_frame = False
                self._buf.clear()
                pos = restart
                continue
            chunk_end = end if end >= 0 else len(data)
            if not self._skipping:
                self._buf += data[pos:chunk_end]
                if len(self._buf) > self.max_message_bytes:
                    head = bytes(self._buf[:2048])
                    self._buf.clear()
                    self._skipping = True
                    if end >= 0:  # the frame ends in this read: resynchronise first
                        self._in_frame = False
                        self._skip_cr(data, end + 1)
                    raise MessageTooLarge(self.max_message_bytes, head)
            if end < 0:
                break
            pos = self._skip_cr(data, end + 1)
            self._cr_due = pos == len(data) and data[-1:] == FS
            if not self._skipping:
                out.append(bytes(self._buf))
            self._buf.clear()
            self._in_frame = self._skipping = False
        return out

    @staticmethod
    def _skip_cr(data: bytes, pos: int) -> int:
        # FS is normally followed by CR; tolerate a bare FS.
        return pos + 1 if data[pos : pos + 1] == b"\r" else pos


def _normalise_ip(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


async def serve_mllp(
    host: str,
    port: int,
    handler: Handler,
    *,
    allowed_clients: set[str] | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    idle_timeout: float | None = 300.0,
    on_error: Callable[[bytes, Exception], bytes] | None = None,
) -> asyncio.Server:
    """Start an MLLP listener; `handler(raw_er7) -> raw_ack` is awaited per message.

    Peers whose IP is not in `allowed_clients` (None allows all) are closed at once. When
    the handler raises or a message is too large, `on_error(head_bytes, exc)` may supply
    the ACK to send (e.g. an AE/AR built with hl7v2.build_ack); otherwise the connection
    is closed, so the sender resends later.
    """
    allowed = {_normalise_ip(a) for a in allowed_clients} if allowed_clients is not None else None

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip = _normalise_ip(str(peer[0])) if peer else "?"
        if allowed is not None and peer_ip not in allowed:
            log.warning("MLLP connection from %s refused (not an allowed client)", peer_ip)
            writer.close()
            await _closed(writer)
            return
        log.info("MLLP connection from %s", peer_ip)
        decoder = MllpDecoder(max_message_bytes)
        try:
            while True:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), idle_timeout)
                if not data:
                    break
                try:
                    messages = decoder.feed(data)
                except MessageTooLarge as exc:
                    log.warning("MLLP message from %s over %d bytes", peer_ip, max_message_bytes)
                    if on_error is None:
                        break
                    writer.write(frame(on_error(exc.head, exc)))
                    await writer.drain()
                    break
                for msg in messages:
                    try:
                        ack = await handler(msg)
                    except Exception as exc:  # the handler's bug must not kill the listener
                        log.error("MLLP handler failed on a %d-byte message", len(msg))
                        if on_error is None:
                            return
                        ack = on_error(msg, exc)
                    writer.write(frame(ack))
                    await writer.drain()
        except TimeoutError:
            log.info("MLLP connection from %s idle; closing", peer_ip)
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("MLLP connection from %s dropped", peer_ip)
        finally:
            if decoder.discarded:
                log.warning("MLLP: %d bytes outside frames from %s", decoder.discarded, peer_ip)
            writer.close()
            await _closed(writer)

    return await asyncio.start_server(on_client, host, port)


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
