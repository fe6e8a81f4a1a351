"""MLLP framing codec and the asyncio MLLP server (real loopback sockets)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fhircare.transitions.hl7v2 import Hl7Error, ack_for_error, build_ack, parse_adt
from fhircare.transitions.mllp import MessageTooLarge, MllpDecoder, frame, serve_mllp

_PV1 = b"PV1|1|I" + b"|" * 17 + b"V1"
MSG1 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|ONE|P|2.5\rPID|1||X^^^H^MR\r" + _PV1
MSG2 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A03|TWO|P|2.5\rPID|1||X^^^H^MR\r" + _PV1


def test_frame_wraps_in_start_and_end_blocks() -> None:
    assert frame(b"abc") == b"\x0babc\x1c\x0d"


def test_decoder_reassembles_split_messages_byte_by_byte() -> None:
    dec = MllpDecoder()
    out: list[bytes] = []
    for i in range(len(data := frame(MSG1))):
        out += dec.feed(data[i : i + 1])
    assert out == [MSG1]


def test_decoder_returns_several_messages_from_one_read() -> None:
    dec = MllpDecoder()
    assert dec.feed(frame(MSG1) + frame(MSG2) + frame(b"")) == [MSG1, MSG2, b""]


def test_decoder_drops_junk_outside_frames() -> None:
    dec = MllpDecoder()
    assert dec.feed(b"\r\nnoise" + frame(MSG1) + b"\n\n" + frame(MSG2)) == [MSG1, MSG2]
    assert dec.discarded == len(b"\r\nnoise") + 2


def test_decoder_end_block_split_between_reads() -> None:
    dec = MllpDecoder()
    assert dec.feed(b"\x0b" + MSG1 + b"\x1c") == [MSG1]  # FS ends the message
    assert dec.feed(b"\x0d\x0b" + MSG2) == []  # its CR arrives with the next read
    assert dec.feed(b"\x1c\x0d") == [MSG2]
    assert dec.discarded == 0


def test_decoder_drops_a_message_cut_short_by_a_new_start_block() -> None:
    dec = MllpDecoder()
    assert dec.feed(b"\x0bpartial message" + frame(MSG2)) == [MSG2]


def test_decoder_tolerates_a_bare_file_separator() -> None:
    dec = MllpDecoder()
    assert dec.feed(b"\x0b" + MSG1 + b"\x1c" + b"\x0b" + MSG2 + b"\x1c\r") == [MSG1, MSG2]


def test_decoder_refuses_oversized_message_then_recovers() -> None:
    dec = MllpDecoder(max_message_bytes=100)
    big = b"MSH|^~\\&|" + b"x" * 200
    with pytest.raises(MessageTooLarge) as err:
        dec.feed(b"\x0b" + big[:150])
    assert err.value.head.startswith(b"MSH|")
    assert dec.feed(big[150:] + b"\x1c\r") == []  # rest of the oversized frame is skipped
    assert dec.feed(frame(MSG1)) == [MSG1]


def test_decoder_accepts_message_at_the_limit() -> None:
    dec = MllpDecoder(max_message_bytes=len(MSG1))
    assert dec.feed(frame(MSG1)) == [MSG1]


# --- server -------------------------------------------------------------------------------


async def _ack_handler(raw: bytes) -> bytes:
    try:
        adt = parse_adt(raw)
    except Hl7Error as exc:
        return ack_for_error(raw, exc).encode()
    return build_ack(adt, "AA").encode()


async def _read_acks(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    dec = MllpDecoder()
    acks: list[bytes] = []
    while len(acks) < count:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "server closed the connection early"
        acks += dec.feed(data)
    return acks


def _msa(ack: bytes) -> list[str]:
    return ack.decode().split("\r")[1].split("|")


def test_server_acks_batched_and_split_messages() -> None:
    async def scenario() -> list[bytes]:
        server = await serve_mllp("127.0.0.1", 0, _ack_handler, allowed_clients={"127.0.0.1"})
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame(MSG1) + frame(MSG2))  # two messages, one write
            await writer.drain()
            third = frame(MSG1.replace(b"ONE", b"THREE").replace(b"ADT^A01", b"ORU^R01"))
            for part in (third[:5], third[5:40], third[40:]):  # one message, three writes
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)
            acks = await _read_acks(reader, 3)
            writer.close()
            await writer.wait_closed()
            return acks
        finally:
            server.close()
            await server.wait_closed()

    acks = asyncio.run(scenario())
    assert [_msa(a)[1:3] for a in acks] == [["AA", "ONE"], ["AA", "TWO"], ["AR", "THREE"]]


def test_server_disconnects_a_client_not_allowed() -> None:
    async def scenario() -> bytes:
        server = await serve_mllp("127.0.0.1", 0, _ack_handler, allowed_clients={"192.0.2.10"})
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame(MSG1))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), 5)
            except ConnectionResetError:
                data = b""
            writer.close()
            return data
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == b""  # EOF, no ACK


def test_server_rejects_oversized_message_via_on_error() -> None:
    def on_error(head: bytes, exc: Exception) -> bytes:
        return build_ack(head, "AR", str(exc), error_code="207").encode()

    async def scenario() -> list[bytes]:
        server = await serve_mllp(
            "127.0.0.1", 0, _ack_handler, max_message_bytes=80, on_error=on_error
        )
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame(MSG1 + b"\rNTE|1||" + b"x" * 200))
            await writer.drain()
            acks = await _read_acks(reader, 1)
            assert await asyncio.wait_for(reader.read(10), 5) == b""  # then closed
            writer.close()
            return acks
        finally:
            server.close()
            await server.wait_closed()

    (ack,) = asyncio.run(scenario())
    assert _msa(ack)[1:3] == ["AR", "ONE"]


def test_server_survives_a_failing_handler() -> None:
    calls = 0

    async def flaky(raw: bytes) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await _ack_handler(raw)

    def on_error(raw: bytes, exc: Exception) -> bytes:
        return build_ack(raw, "AE", "internal error", error_code="207").encode()

    async def scenario() -> list[bytes]:
        server = await serve_mllp("127.0.0.1", 0, flaky, on_error=on_error)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame(MSG1) + frame(MSG2))
            await writer.drain()
            acks = await _read_acks(reader, 2)
            writer.close()
            return acks
        finally:
            server.close()
            await server.wait_closed()

    acks = asyncio.run(scenario())
    assert [_msa(a)[1:3] for a in acks] == [["AE", "ONE"], ["AA", "TWO"]]
