"""Concurrent writes of durable state (processed markers, dedup keys) with HAPI as the store,
measured side by side in one run against a real HAPI FHIR server:

* `fhircare`: `RemoteStore.set_meta`, one Basic resource per key (a plain PUT, collisions
  retried);
* `single`: the baseline design, every key in one Basic resource updated by read, modify,
  If-Match write (retried on 412 only, as the store did before; HAPI answers 409).

W writers at once (each its own client, as separate processes would be), half of them on
distinct keys and half on one shared key. Prints `name=value` lines.

    python benchmarks/bench_hapi_meta.py --base http://127.0.0.1:8090/fhir [--writers 60]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fhircare.fhir.errors import FhirError, PreconditionFailed
from fhircare.remote.client import FhirClient
from fhircare.store.remote import META_EXTENSION, RemoteStore

Writer = Callable[[FhirClient, str, Any], None]


def fhircare_writer(client: FhirClient, key: str, value: Any) -> None:
    RemoteStore(client).set_meta(key, value)


def single_resource_writer(resource_id: str) -> Writer:
    """The baseline: all keys in one resource, read-modify-write guarded by If-Match."""

    def write(client: FhirClient, key: str, value: Any) -> None:
        for _ in range(5):
            try:
                current = client.read("Basic", resource_id)
            except FhirError:
                current = None
            values = {}
            for ext in (current or {}).get("extension") or []:
                parts = {e["url"]: e["valueString"] for e in ext.get("extension") or []}
                values[parts["key"]] = parts["value"]
            values[key] = json.dumps(value)
            resource = {
                "resourceType": "Basic",
                "id": resource_id,
                "code": {"text": "benchmark baseline"},
                "extension": [
                    {
                        "url": META_EXTENSION,
                        "extension": [
                            {"url": "key", "valueString": k},
                            {"url": "value", "valueString": v},
                        ],
                    }
                    for k, v in sorted(values.items())
                ],
            }
            version = ((current or {}).get("meta") or {}).get("versionId")
            try:
                client.update(resource, if_match=version)
                return
            except PreconditionFailed:
                continue
        raise FhirError("the resource kept changing under concurrent writers", status=409)

    return write


def run(base: str, writers: int, write: Writer, prefix: str) -> tuple[int, float]:
    """(failed writes, seconds) for `writers` concurrent writers."""

    def one(i: int) -> bool:
        key = f"{prefix}.shared" if i % 2 else f"{prefix}.{i}"
        with FhirClient(base) as client:
            try:
                write(client, key, {"writer": i})
            except FhirError:
                return False
        return True

    started = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        ok = list(pool.map(one, range(writers)))
    return ok.count(False), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="HAPI FHIR base URL")
    parser.add_argument("--writers", type=int, default=60)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:10]
    failed, seconds = run(args.base, args.writers, fhircare_writer, f"bench.{tag}")
    base_failed, base_seconds = run(
        args.base, args.writers, single_resource_writer(f"bench-meta-{tag}"), f"bench.{tag}"
    )
    print(f"writers={args.writers}")
    print(f"fhircare_failed={failed}")
    print(f"fhircare_seconds={seconds:.2f}")
    print(f"single_resource_failed={base_failed}")
    print(f"single_resource_seconds={base_seconds:.2f}")
    print(f"failed_ratio_fhircare_to_single={failed / max(base_failed, 1):.2f}")


if __name__ == "__main__":
    main()
