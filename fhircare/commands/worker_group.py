"""`fhircare serve --workers N`: N uvicorn worker processes on one address and one embedded
store.

The parent takes the data folder's lock (so a second server on the folder is refused, and
the workers it forks inherit the lock), binds the address (`listening_sockets`: on Linux a
socket per worker, which the kernel balances connections over) and forks the workers; each
opens the store shared (`EmbeddedStore(shared=True)`: the journal is the truth they all
follow) and runs the app on the inherited socket. Worker 0 is the leader: only it runs the
background loops and the MLLP listener. SIGTERM or SIGINT to the parent stops every worker
and exits 0; a worker that dies on its own stops the group (exit 1): a supervisor restarts
it whole, and no loop, lock or store is left half-owned. A parent killed outright (SIGKILL)
takes its workers with it on Linux (the kernel's parent-death signal): none goes on serving,
or holding the folder, without it.

`/metrics` merges every worker's figures: the parent makes a fresh folder for
prometheus-client's multiprocess mode in the data folder at each start
(`metrics_folder`), each worker writes its values there (`metrics.use_multiprocess`), and
the parent marks a worker that exited as dead there (its live-only gauges drop out).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from types import FrameType
from typing import Any

from fhircare.config import Settings

log = logging.getLogger("fhircare")

# Builds and runs one worker's app on its socket (fhircare.cli passes its uvicorn runner).
WorkerMain = Callable[[Settings, socket.socket], None]
# Binds the group's sockets for so many workers (`listening_sockets`).
Bind = Callable[[int], list[socket.socket]]

METRICS_FOLDER = "metrics-workers"  # in the data folder: the workers' Prometheus values


def metrics_folder(settings: Settings) -> Path:
    """The group's folder for prometheus-client's multiprocess files, emptied: what a
    previous group left there (counts of processes gone) must not be counted again. The
    folder's lock, which the caller holds, keeps any other group out of it."""
    folder = settings.data / METRICS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """The group's sockets, bound, not yet listening (each worker's server listens on its).

    On Linux, one per worker, all bound to the address with SO_REUSEPORT: the kernel then
    spreads new connections evenly over the workers. With one socket shared, whichever
    worker wakes first takes each connection, and kept-alive connections stay where they
    landed: 32 clients' connections split 28/4 and 3/29 between two workers, leaving one
    worker (one core, the GIL) with most of the load. Elsewhere (SO_REUSEPORT does not
    balance there) one socket, shared. A plain bind comes first, so an address in use,
    another group of ours included, is refused as with one process (OSError); port 0
    takes the port that bind chose.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def bound(at: int, reuse_port: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, at))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        return sock

    probe = bound(port, False)
    if count < 2 or not sys.platform.startswith("linux"):
        return [probe]
    chosen = probe.getsockname()[1]
    probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(bound(chosen, True))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def run_group(settings: Settings, bind: Bind, main: WorkerMain) -> int:
    """Run `settings.workers` workers until a signal or a worker's death; the exit code.
    The caller holds the folder's lock (`journal.lock_folder`), which the workers inherit."""
    from prometheus_client.multiprocess import mark_process_dead

    metrics_dir = metrics_folder(settings)
    sockets = bind(settings.workers)
    ctx = multiprocessing.get_context("fork")  # the socket and the folder lock are inherited
    workers: list[Any] = []
    for index in range(settings.workers):
        worker_settings = settings.model_copy(update={"worker_index": index})
        process = ctx.Process(
            target=_worker,
            args=(main, worker_settings, sockets, os.getpid(), metrics_dir),
            daemon=False,
        )
        process.start()
        workers.append(process)
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        alive = list(workers)
        while alive:
            wait([p.sentinel for p in alive])
            for process in [p for p in alive if p.exitcode is not None]:
                alive.remove(process)
                mark_process_dead(process.pid, str(metrics_dir))
                if not stopping:
                    log.error(
                        "worker %d (pid %d) exited with %s: stopping the other workers",
                        workers.index(process),
                        process.pid,
                        process.exitcode,
                    )
                    code = 1
                    stop(signal.SIGTERM, None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for sock in sockets:
            sock.close()
    return code


PR_SET_PDEATHSIG = 1  # prctl(2)


def _exit_with_parent(parent: int) -> None:
    """(Linux) have the kernel send this worker SIGTERM when its parent dies, however it
    dies; exit at once if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(1)


def _worker(
    main: WorkerMain,
    settings: Settings,
    sockets: list[socket.socket],
    parent: int,
    metrics_dir: Path,
) -> None:
    """One worker: its own socket (or the one shared), the others' closed in this process."""
    from fhircare.observability import metrics

    sock = sockets[settings.worker_index % len(sockets)]
    for other in sockets:
        if other is not sock:
            other.close()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM
    _exit_with_parent(parent)
    metrics.use_multiprocess(metrics_dir)
    main(settings, sock)
