"""How long a writer waits while the embedded store compacts, in line and in the background.

A store holding `--resources` Patients (written in large commits first); one thread then
creates a Patient at a time (fsynced, as `serve` does) while the store compacts twice: once
in line (`compact()`, the snapshot written under the commit lock, as every due compaction
did before) and once in the background (`compact(background=True)`, as a due commit does
now). Prints the writer's longest and p99 commit latency during each, the snapshot's size
and the ratio in-line / background. Run: `python benchmarks/bench_compaction.py`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_store import patient

from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore


def fill(store: EmbeddedStore, count: int, batch: int = 2_000) -> None:
    for start in range(0, count, batch):
        store.commit(
            [WriteOp("create", "Patient", resource=patient(i)) for i in range(start, start + batch)]
        )


def during(store: EmbeddedStore, compact: Any, first: int) -> tuple[list[float], float]:
    """Commit latencies (ms) of one writer while `compact` runs (and 0.2 s on each side),
    and the seconds `compact` took to return plus any snapshot still being written."""
    latencies: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        i = first
        while not stop.is_set():
            t = time.perf_counter()
            store.commit([WriteOp("create", "Patient", resource=patient(i))])
            latencies.append((time.perf_counter() - t) * 1000)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    while len(latencies) < 200:  # the writer is going
        time.sleep(0.01)
    t = time.perf_counter()
    compact()
    store.wait_for_snapshot()
    took = time.perf_counter() - t
    count = len(latencies)
    while len(latencies) < count + 200:  # and goes on after
        time.sleep(0.01)
    stop.set()
    thread.join()
    return latencies, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "data")
        t = time.perf_counter()
        fill(store, args.resources)
        print(f"resources={args.resources}")
        print(f"fill_s={time.perf_counter() - t:.1f}")
        store.compact()
        print(f"snapshot_mb={(Path(tmp) / 'data' / 'snapshot.json').stat().st_size / 1e6:.1f}")
        figures: dict[str, tuple[float, float]] = {}
        for name, compact in (
            ("inline", store.compact),
            ("background", lambda: store.compact(background=True)),
        ):
            latencies, took = during(store, compact, 10_000_000 * (len(figures) + 1))
            ordered = sorted(latencies)
            worst, p99 = ordered[-1], ordered[int(len(ordered) * 0.99)]
            figures[name] = (worst, p99)
            print(f"{name}_compaction_s={took:.2f}")
            print(f"{name}_commits={len(latencies)}")
            print(f"{name}_median_ms={statistics.median(latencies):.2f}")
            print(f"{name}_p99_ms={p99:.2f}")
            print(f"{name}_max_ms={worst:.1f}")
        ratio = figures["inline"][0] / figures["background"][0]
        print(f"ratio_max_inline_over_background={ratio:.1f}")
        store.close()


if __name__ == "__main__":
    main()
