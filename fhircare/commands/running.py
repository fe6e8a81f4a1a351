"""A running `fhircare serve` announces itself in its data folder (`serve.json`: pid and
URL), so commands that find the folder locked can ask that server instead of failing."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from fhircare.config import Settings

ANNOUNCEMENT = "serve.json"


def _local_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: loopback reaches it
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


@contextlib.contextmanager
def announce(settings: Settings) -> Iterator[None]:
    """While the block runs, `<data>/serve.json` says where this server listens."""
    if settings.store != "embedded":
        yield
        return
    path = Path(settings.data) / ANNOUNCEMENT
    path.write_text(json.dumps({"pid": os.getpid(), "url": _local_url(settings)}))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def running_server(data: Path) -> str | None:
    """The URL of the `fhircare serve` holding `data`, if it announced itself and lives."""
    try:
        info = json.loads((Path(data) / ANNOUNCEMENT).read_text())
        pid, url = int(info["pid"]), str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another user
        pass
    return url
