"""How `fhircare serve` runs uvicorn: its fastest event loop and HTTP parser where installed.

uvloop (libuv) and httptools (the llhttp parser) are dependencies on the platforms that
have wheels for them; elsewhere uvicorn's pure-Python defaults (asyncio, h11) serve the
same API, only slower.
"""

from __future__ import annotations

import importlib.util
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
