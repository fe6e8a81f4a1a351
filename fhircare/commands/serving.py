"""How `fhircare serve` runs uvicorn: its fastest event loop and HTTP parser where installed.

uvloop (libuv) and httptools (the llhttp parser) are dependencies on the platforms that
have wheels for them; elsewhere uvicorn's pure-Python defaults (asyncio, h11) serve the
same API, only slower.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from typing import Any

from fhircare.commands.header_limit import limited_protocol

# uvicorn closes a kept-alive connection idle for 5 s by default: a client whose pool
# reuses it just then gets a reset (seen at 64 concurrent clients). Tomcat, under HAPI,
# keeps them for 60 s.
KEEP_ALIVE_SECONDS = 60


def server_options(max_header_bytes: int = 32 * 1024) -> dict[str, Any]:
    """uvicorn `loop` and `http` settings (uvloop and httptools when importable, the
    protocol answering 431 beyond `max_header_bytes` of request head) and the keep-alive
    timeout."""
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": limited_protocol(http, max_header_bytes),
        "h11_max_incomplete_event_size": max_header_bytes,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }


# The cyclic collector's thresholds for `fhircare serve`: (700, 10, 10) by default. The
# embedded store keeps every resource as nested dicts in memory (AuditEvents, about two per
# request, as packed bytes, which it need not walk), so the heap grows under load and each
# full collection walks all of it (0.2 s and more at tens of thousands of resources, every
# few seconds: about a tenth of the server's CPU, before AuditEvents were packed). Fewer
# young collections, and a full one at most every 100 middle ones; cyclic garbage, rare on
# the request path, waits longer to be freed.
GC_THRESHOLDS = (7000, 10, 100)


def tune_collector() -> None:
    """Collect once, freeze what is alive after start-up (modules, FHIR definitions, the
    loaded store: never walked again, though refcounting still frees it), and set
    `GC_THRESHOLDS`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def lean_log_records() -> None:
    """Skip what every log record would gather and fhircare's formats never show: the
    caller's file, line and function (a walk up the stack), the thread, process and
    multiprocessing names. Creating a record then costs about half as much."""
    logging._srcfile = None  # type: ignore[attr-defined]  # logging's documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
