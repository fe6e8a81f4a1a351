"""Kill -9 at random moments: every acknowledged write must survive, the store must open."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from fhircare.store.embedded import EmbeddedStore
from tests.conftest import ROOT, ServerProcess

pytestmark = pytest.mark.slow


def _run_and_kill(folder: Path, prefix: str, compact: int, seconds: float) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.writer", str(folder), prefix, str(compact)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(line.strip())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t.join(5)
    return acked


@pytest.mark.parametrize("compact", [10_000_000, 40_000])  # plain journal; frequent snapshots
def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path, compact: int) -> None:
    folder = tmp_path / "store"
    rng = random.Random(7)
    all_acked: list[str] = []
    for round_no in range(6):
        acked = _run_and_kill(folder, f"r{round_no}", compact, rng.uniform(0.8, 2.0))
        assert acked, "the writer acknowledged nothing before the kill"
        all_acked += acked
        store = EmbeddedStore(folder)  # must open after every kill
        try:
            missing = [p for p in all_acked if not store.exists("Patient", p)]
            assert not missing, f"lost {len(missing)} acknowledged writes, e.g. {missing[:3]}"
            missing_goals = [p for p in all_acked if not store.exists("Goal", f"g-{p}")]
            assert not missing_goals, "a commit was applied only in part"
        finally:
            store.close()
    assert len(all_acked) > 100


def test_kill_9_of_the_server_under_http_writes(tmp_path: Path) -> None:
    """Acknowledged (201) creates over HTTP survive a SIGKILL of `fhircare serve`."""
    data = tmp_path / "srv"
    acked: list[str] = []
    for _ in range(3):
        srv = ServerProcess(data).start()
        stop = time.monotonic() + random.uniform(1.0, 2.0)
        errors = 0

        def writer(stop: float = stop, srv: ServerProcess = srv) -> None:
            nonlocal errors
            with httpx.Client(base_url=srv.base, timeout=5) as c:
                while time.monotonic() < stop + 5:
                    try:
                        r = c.post(
                            "/Patient", json={"resourceType": "Patient", "name": [{"family": "K"}]}
                        )
                    except httpx.HTTPError:
                        errors += 1
                        return
                    if r.status_code == 201:
                        acked.append(r.json()["id"])

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(max(0.0, stop - time.monotonic()))
        srv.kill()
        for t in threads:
            t.join(10)
    srv = ServerProcess(data).start()
    try:
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            missing = [i for i in acked if c.get(f"/Patient/{i}").status_code != 200]
    finally:
        srv.stop()
    assert len(acked) > 20
    assert not missing, f"{len(missing)} acknowledged creates lost"


@pytest.mark.hapi
def test_kill_9_with_hapi_as_the_store(hapi_base_url: str, tmp_path: Path) -> None:
    """With HAPI as the store, an acknowledged write is in HAPI before the 201: killing
    the fhircare process under load loses none of them."""
    env = {
        "FHIRCARE_STORE": "hapi",
        "FHIRCARE_HAPI_URL": hapi_base_url,
        "FHIRCARE_SEED_DEFINITIONS": "false",
        "FHIRCARE_AUDIT": "false",
    }
    tag = f"k9-{random.randrange(10**9)}"
    acked: list[str] = []
    for _ in range(2):
        srv = ServerProcess(tmp_path / "unused", env=env).start()
        stop = time.monotonic() + random.uniform(1.5, 3.0)

        def writer(srv: ServerProcess = srv, stop: float = stop) -> None:
            with httpx.Client(base_url=srv.base, timeout=10) as c:
                while time.monotonic() < stop + 5:
                    try:
                        r = c.post(
                            "/Patient", json={"resourceType": "Patient", "name": [{"family": tag}]}
                        )
                    except httpx.HTTPError:
                        return
                    if r.status_code == 201:
                        acked.append(r.json()["id"])

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(max(0.0, stop - time.monotonic()))
        srv.kill()
        for t in threads:
            t.join(15)
    assert len(acked) > 10
    with httpx.Client(base_url=hapi_base_url, timeout=30) as hapi:
        missing = [i for i in acked if hapi.get(f"/Patient/{i}").status_code != 200]
        found = hapi.get("/Patient", params={"family": tag, "_summary": "count"}).json()
    assert not missing, f"{len(missing)} acknowledged creates are not in HAPI"
    assert found["total"] >= len(acked)  # none lost; a write killed before its 201 may exist
