"""A process that writes to an embedded store forever, printing each acknowledged id.

Used by the durability tests, which kill it with SIGKILL at random moments.
usage: python -m tests.helpers.writer FOLDER PREFIX COMPACT_BYTES
"""

from __future__ import annotations

import sys
from pathlib import Path

from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore


def main() -> None:
    folder, prefix, compact = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = EmbeddedStore(folder, compact_bytes=compact)
    n = 0
    while True:
        n += 1
        pid = f"{prefix}-{n}"
        ops = [
            WriteOp(
                "update",
                "Patient",
                id=pid,
                resource={"resourceType": "Patient", "name": [{"family": pid}]},
            ),
            WriteOp(
                "update",
                "Goal",
                id=f"g-{pid}",
                resource={
                    "resourceType": "Goal",
                    "lifecycleStatus": "active",
                    "description": {"text": "x" * (n % 500)},
                    "subject": {"reference": f"Patient/{pid}"},
                },
            ),
        ]
        store.commit(ops)
        sys.stdout.write(pid + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
