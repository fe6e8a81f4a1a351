"""How `fhircare serve` runs uvicorn: its fastest event loop and HTTP parser where installed.

uvloop (libuv) and httptools (the llhttp parser) are dependencies on the platforms that
have wheels for them; elsewhere uvicorn's pure-Python defaults (asyncio, h11) serve the
same API, only slower.
"""

from __future__ import annotations

import importlib.util
from typing import Any


def server_options() -> dict[str, Any]:
    """uvicorn `loop` and `http` settings: uvloop and httptools when importable."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }
