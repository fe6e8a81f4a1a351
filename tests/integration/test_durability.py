"""Kill -9 at random moments: every acknowledged write must survive, the store must open."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from fhircare.store.embedded import EmbeddedStore
from tests.conftest import ROOT, ServerProcess

pytestmark = pytest.mark.slow


def _run_and_kill(folder: Path, prefix: str, compact: int, kill_after: int) -> list[str]:
    """Start the writer, kill -9 it once it has acknowledged `kill_after` commits (read
    from its stdout, so the kill lands mid-write, whatever the machine's load)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.writer", str(folder), prefix, str(compact)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= kill_after:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked += [line.strip() for line in proc.stdout]  # acknowledged before the kill landed
    assert len(acked) >= kill_after, f"the writer exited early: {proc.stderr.read()[-2000:]}"
    return acked


@pytest.mark.parametrize("compact", [10_000_000, 40_000])  # plain journal; frequent snapshots
def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path, compact: int) -> None:
    folder = tmp_path / "store"
    rng = random.Random(7)
    all_acked: list[str] = []
    for round_no in range(6):
        acked = _run_and_kill(folder, f"r{round_no}", compact, rng.randint(20, 120))
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


def _write_until_killed(srv: ServerProcess, kill_after: int, family: str) -> list[str]:
    """Three writers POST Patients; once `kill_after` creates were acknowledged (201), the
    server is killed with SIGKILL while the writers keep going. Returns the acknowledged ids."""
    acked: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=srv.base, timeout=30) as c:
            while True:
                try:
                    r = c.post(
                        "/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    with lock:
                        acked.append(r.json()["id"])
                        if len(acked) >= kill_after:
                            enough.set()

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    while not enough.wait(1):  # a writer that died early must not hang the test
        assert any(t.is_alive() for t in threads), f"writers stopped after {len(acked)} creates"
    srv.kill()
    for t in threads:
        t.join(60)
    return acked


def test_kill_9_of_the_server_under_http_writes(tmp_path: Path) -> None:
    """Acknowledged (201) creates over HTTP survive a SIGKILL of `fhircare serve`."""
    data = tmp_path / "srv"
    rng = random.Random(11)
    acked: list[str] = []
    for _ in range(3):
        acked += _write_until_killed(ServerProcess(data).start(), rng.randint(10, 40), "K")
    srv = ServerProcess(data).start()
    try:
        with httpx.Client(base_url=srv.base, timeout=10) as c:
            missing = [i for i in acked if c.get(f"/Patient/{i}").status_code != 200]
    finally:
        srv.stop()
    assert len(acked) >= 30
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
    for kill_after in (8, 15):
        srv = ServerProcess(tmp_path / "unused", env=env).start()
        acked += _write_until_killed(srv, kill_after, tag)
    assert len(acked) >= 23
    with httpx.Client(base_url=hapi_base_url, timeout=30) as hapi:
        missing = [i for i in acked if hapi.get(f"/Patient/{i}").status_code != 200]
        found = hapi.get("/Patient", params={"family": tag, "_summary": "count"}).json()
    assert not missing, f"{len(missing)} acknowledged creates are not in HAPI"
    assert found["total"] >= len(acked)  # none lost; a write killed before its 201 may exist
