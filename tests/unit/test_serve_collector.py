"""`fhircare serve` tunes the cyclic collector once the app is built: what is alive then is
frozen, and full collections are spaced out (see `fhircare.commands.serving`)."""

from __future__ import annotations

import subprocess
import sys

from fhircare.commands.serving import GC_THRESHOLDS


def test_tune_collector_freezes_the_startup_heap_and_sets_the_thresholds() -> None:
    code = (
        "import gc; from fhircare.commands.serving import tune_collector; "
        "tune_collector(); print(gc.get_freeze_count(), *gc.get_threshold())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) > 1000  # modules and their objects, frozen
    assert tuple(int(x) for x in out[1:]) == GC_THRESHOLDS


def test_lean_log_records_skip_caller_thread_and_process_lookups() -> None:
    code = (
        "import logging; from fhircare.commands.serving import lean_log_records; "
        "lean_log_records(); r = logging.LogRecord('t', 20, 'f', 1, 'm', (), None); "
        "print(logging._srcfile, r.thread, r.process, r.processName)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["None", "None", "None", "None"]
