"""Browser tests: Debian's chromium driven by Playwright against a real `fhircare serve`
holding the demo's data and a reconciled discharge. One browser for these tests; each test
gets a fresh context. Screenshots go to build/screenshots/ (or FHIRCARE_SCREENSHOTS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import ROOT, ServerProcess

CHROMIUM = (
    os.environ.get("FHIRCARE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path(os.environ.get("FHIRCARE_SCREENSHOTS") or ROOT / "build" / "screenshots")
CM = "Practitioner/demo-care-manager"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def discharge_transaction() -> dict[str, Any]:
    """The repository's example discharge as a transaction, its patient renamed so that the
    screens tell her from the demo's Dana Sample."""
    bundle = json.loads((ROOT / "examples" / "discharge-bundle.json").read_text())
    bundle["type"] = "transaction"
    for entry in bundle["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Patient":
            r["name"] = [{"family": "Example", "given": ["Robin"]}]
        entry["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
    return bundle


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`fhircare serve` with the demo's data (`fhircare demo --server`) and a discharge
    whose reconciliation flagged two issues for the care manager."""
    srv = ServerProcess(
        tmp_path_factory.mktemp("webapp") / "data",
        env={"FHIRCARE_CARE_MANAGER": CM, "FHIRCARE_AUDIT": "false"},
    ).start()
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "fhircare", "demo", "--server", srv.root],
            capture_output=True, text=True, timeout=300,
        )
        assert demo.returncode == 0, demo.stderr[-2000:]
        posted = httpx.post(f"{srv.base}", json=discharge_transaction(), headers=FHIR, timeout=60)
        assert posted.status_code == 200, posted.text[:500]
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(app_server: ServerProcess) -> Iterator[httpx.Client]:
    """What the FHIR API holds: the tests check it after the browser wrote."""
    with httpx.Client(base_url=app_server.base, headers=FHIR, timeout=30) as client:
        yield client


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One chromium for the browser tests. Package scope, not session: Playwright's sync API
    keeps an event loop running in this thread while it is open, and the rest of the suite's
    `asyncio.run` must not meet it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium is not installed ({CHROMIUM}): scripts/test installs it with apt")
    if not AXE.exists():
        pytest.fail(f"axe-core is missing ({AXE}): run npm ci in tests/browser (scripts/test does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no storage) at laptop size; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors


def open_screen(page: Page, server: ServerProcess, route: str, me: str = CM) -> None:
    """Load the app at a screen as practitioner `me`, and wait until it has rendered."""
    page.goto(f"{server.root}/app/?practitioner={me}{route}")
    page.wait_for_function("document.body.dataset.ready === location.hash")


def wait_rendered(page: Page, route: str) -> None:
    page.wait_for_function(f"document.body.dataset.ready === {json.dumps(route)}")


def check_screen(page: Page, name: str) -> None:
    """No serious or critical accessibility violation (axe-core), and a screenshot."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{name}: " + "; ".join(bad)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]
