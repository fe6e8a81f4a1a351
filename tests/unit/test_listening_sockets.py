"""`serve --workers`: the group's listening sockets (a socket per worker on Linux, bound with
SO_REUSEPORT, so the kernel balances new connections over the workers; an address in use is
refused as with one process)."""

from __future__ import annotations

import socket
import sys

import pytest

from fhircare.commands.worker_group import listening_sockets

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing")


@linux
def test_a_socket_per_worker_on_one_port() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 3)
    try:
        assert len(sockets) == 3
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1 and ports != {0}
        for s in sockets:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert s.get_inheritable()
        for s in sockets:
            s.listen()
        # a connection is accepted by one of them
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass
    finally:
        for s in sockets:
            s.close()


def test_one_worker_gets_one_plain_socket() -> None:
    (only,) = listening_sockets("127.0.0.1", 0, 1)
    try:
        assert only.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        only.close()


@linux
def test_an_address_in_use_is_refused_even_by_a_group_like_ours() -> None:
    group = listening_sockets("127.0.0.1", 0, 2)
    port = group[0].getsockname()[1]
    try:
        for s in group:
            s.listen()
        with pytest.raises(OSError):
            listening_sockets("127.0.0.1", port, 2)  # would otherwise join the group
        plain = socket.socket()
        try:
            with pytest.raises(OSError):
                plain.bind(("127.0.0.1", port))
        finally:
            plain.close()
    finally:
        for s in group:
            s.close()
