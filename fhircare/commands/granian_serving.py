"""How `fhircare serve --server granian` runs: granian's embedded server, whose Rust threads
parse HTTP and do the socket I/O outside the GIL, in this process and on its event loop.

The application (and so the store, its lock, the MLLP listener and the background loops the
lifespan starts) stays in this process, as under uvicorn; granian runs the ASGI lifespan,
and SIGINT or SIGTERM stop it gracefully: no new connections, requests in flight answered,
then the lifespan's shut-down. HTTP/1.1 only (no HTTP/2, no WebSockets); a request head
beyond FHIRCARE_MAX_HEADER_BYTES is answered 431 by `HeadLimit` (with the OperationOutcome)
or, past granian's read buffer or its 100 headers, by granian itself (an empty 431).
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from typing import Any

from fhircare.commands.header_limit import HeadLimit
from fhircare.commands.serving import KEEP_ALIVE_SECONDS

# Rust threads for the HTTP work. Two (the machine's cores) answered 14% more bare reads
# than one at 32 clients (7,408 against 6,526 req/s), at 0.076 against 0.070 ms of CPU
# per request, and a one-client read 0.09 ms faster (benchmarks/bench_floor.py).
RUNTIME_THREADS = 2


def serve_granian(
    app: Any, host: str, port: int, max_header_bytes: int, log_level: str = "INFO"
) -> None:
    """Serve `app` on host:port until SIGINT or SIGTERM; uvloop where installed."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        HeadLimit(app, max_header_bytes),
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        runtime_threads=RUNTIME_THREADS,
        # hyper's idle and header timer: a kept-alive connection lives as long as uvicorn's
        http1_settings=HTTP1Settings(header_read_timeout=KEEP_ALIVE_SECONDS * 1000),
        # granian's own log lines go through fhircare's handler (FHIRCARE_LOG_*)
        log_level=LogLevels(log_level.lower()),
        log_dictconfig={"loggers": {"_granian": {"handlers": [], "propagate": True}}},
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    if importlib.util.find_spec("uvloop"):
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
