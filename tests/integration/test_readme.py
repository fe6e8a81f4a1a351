"""Every shell example in README.md runs as written on a fresh `fhircare serve`.

Convention (README authors: read this):
- A fenced block whose info string is exactly `sh` is executed. Blocks run in the order
  they appear, each in its own `bash -euo pipefail`, all against ONE fresh `fhircare serve`
  started with no options and no FHIRCARE_ settings, from a folder laid out like a checkout
  (the repository's `examples/` is copied there; the server's data is its `./.fhircare`).
  So later blocks see what earlier blocks wrote, and a block may write files in the folder.
- `localhost:8000` and `127.0.0.1:8000` are rewritten to the test server's free port; that
  is the only change made to the text.
- `curl` runs with `--fail-with-body`: an HTTP error answer fails the block. An HL7 ACK with
  `MSA|AE` or `MSA|AR` in a block's output fails it too.
- A block that is not meant to run against a fresh server (installing, the test suite,
  HAPI, Docker, benchmarks) says so in its info string: ```` ```sh not-run ````. Keep those
  few; every other command a reader may copy must work.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_http

README = ROOT / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
LOCAL = re.compile(r"(?:localhost|127\.0\.0\.1):8000\b")


def shell_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, info string, body) of every fenced block."""
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
        for m in FENCE.finditer(text)
    ]


def runnable(text: str) -> list[tuple[int, str]]:
    return [(line, body) for line, info, body in shell_blocks(text) if info == "sh"]


def test_every_shell_block_is_run_or_marked() -> None:
    for line, info, _ in shell_blocks(README.read_text()):
        lang = info.split()[0] if info else ""
        if lang in ("sh", "bash", "shell", "console"):
            assert info in ("sh", "sh not-run"), f"README.md:{line}: use ```sh or ```sh not-run"
    assert len(runnable(README.read_text())) >= 5


@pytest.fixture
def fresh_serve(tmp_path: Path):  # noqa: ANN201 - (folder, port, env)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIRCARE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhircare", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", 90, proc)
        yield tmp_path, port, env
    finally:
        proc.terminate()
        proc.wait(30)


def test_readme_examples_run_as_written(fresh_serve: tuple[Path, int, dict[str, str]]) -> None:
    folder, port, env = fresh_serve
    prelude = 'curl() { command curl --fail-with-body "$@"; }\n'
    for line, body in runnable(README.read_text()):
        script = prelude + LOCAL.sub(f"127.0.0.1:{port}", body)
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        shown = (
            f"README.md:{line}\n{body}\n--- stdout\n{run.stdout[-3000:]}"
            f"\n--- stderr\n{run.stderr[-3000:]}"
        )
        assert run.returncode == 0, shown
        assert not re.search(r"MSA\|A[ER]", run.stdout), shown
