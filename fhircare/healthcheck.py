"""`python -m fhircare.healthcheck`: exit 0 when the local `fhircare serve` answers /health.

For container healthchecks (the image has Python but no curl or wget). The port is
FHIRCARE_PORT (default 8000); the check always asks the loopback address.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("FHIRCARE_PORT", "8000")
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return 0 if response.status == 200 else 1
    except OSError as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
