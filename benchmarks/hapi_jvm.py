"""How the benchmarks that compare fhircare with HAPI run HAPI's JVM: as the official
`hapiproject/hapi` image does, with no JIT or GC options (its ENTRYPOINT passes none), so
the JVM picks its own: the C2 JIT and, on a machine of 2+ cores and 2+ GB, G1 with a heap of
up to a quarter of memory. `scripts/hapi`'s defaults for the test suite (C1 only, serial
GC: fast starts) would handicap HAPI in a throughput comparison.
"""

from __future__ import annotations

import os
import subprocess

IMAGE_JAVA_OPTS = ""  # set but empty: `scripts/hapi` then passes the JVM no options


def env() -> dict[str, str]:
    """The environment for `scripts/hapi start` with the image's JVM settings."""
    return {**os.environ, "HAPI_JAVA_OPTS": IMAGE_JAVA_OPTS}


def flags(pid: int | None) -> dict[str, str]:
    """The running JVM's collector, JIT tier limit and maximum heap (from `jcmd VM.flags`;
    empty when `jcmd` is missing or cannot attach)."""
    if pid is None:
        return {}
    try:
        out = subprocess.run(
            ["jcmd", str(pid), "VM.flags", "-all"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "=":
            found[parts[1]] = parts[3]
    if not found:
        return {}
    gc = next((g for g in ("G1", "Serial", "Parallel", "Z", "Shenandoah")
               if found.get(f"Use{g}GC") == "true"), "?")  # fmt: skip
    return {
        "hapi_jvm_gc": gc,
        "hapi_jvm_tiered_stop_at_level": found.get("TieredStopAtLevel", "?"),
        "hapi_jvm_max_heap_mb": str(int(found.get("MaxHeapSize", "0")) // 2**20),
    }
