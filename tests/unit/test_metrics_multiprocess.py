"""The metrics of `serve --workers N` (prometheus-client's multiprocess mode), with child
processes standing for the workers: counters are summed over them, a gauge computed at
scrape time is the latest worker's figure (never a sum over the workers, nor one series
per worker), and a worker marked dead drops out of it; one process renders as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fhircare.observability import metrics

WORKER = """
import sys
from pathlib import Path
from fhircare.observability import metrics
metrics.use_multiprocess(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    metrics.HTTP_REQUESTS.labels("GET", "/fhir/{resource_type}", "200").inc()
metrics.SYNC_OUTBOX.set(float(sys.argv[3]))
print(__import__("os").getpid())
"""

SCRAPE = """
import sys
from pathlib import Path
from prometheus_client.multiprocess import mark_process_dead
from fhircare.observability import metrics
for pid in sys.argv[2:]:
    mark_process_dead(int(pid), sys.argv[1])
metrics.use_multiprocess(Path(sys.argv[1]))
sys.stdout.write(metrics.render()[0].decode())
"""


def _run(code: str, *args: object) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


def test_workers_figures_merge(tmp_path: Path) -> None:
    first = int(_run(WORKER, tmp_path, 2, 7))
    second = int(_run(WORKER, tmp_path, 3, 4))  # scraped later: its outbox is the news
    text = _run(SCRAPE, tmp_path)
    assert _samples(text, "fhircare_http_requests_total") == [
        'fhircare_http_requests_total{method="GET",route="/fhir/{resource_type}",status="200"} 5.0'
    ]
    assert _samples(text, "fhircare_sync_outbox_depth ") == ["fhircare_sync_outbox_depth 4.0"]
    assert first != second
    # the second worker exits: its gauge goes, what it counted stays
    text = _run(SCRAPE, tmp_path, second)
    assert _samples(text, "fhircare_sync_outbox_depth ") == ["fhircare_sync_outbox_depth 7.0"]
    assert _samples(text, "fhircare_http_requests_total")[0].endswith(" 5.0")


def test_one_process_renders_its_own_registry() -> None:
    assert metrics.multiprocess_dir() is None
    text = metrics.render()[0].decode()
    assert "process_" in text or "python_info" in text  # the default collectors, as before
    assert "fhircare_sync_outbox_depth" in text
