"""A bounded availability probe: one HTTP request (a new TCP connection) every
INTERVAL seconds until STOPFILE exists or SECONDS passed.

    python -m lab.probe URL INTERVAL SECONDS STOPFILE [TIMEOUT]

Run it inside a lab namespace (ip netns exec ks-host01 ...): it only targets
the URL it is given. Prints one JSON line: requests, failures, the longest
gap between two answered requests, the first failures (time, reason), and
every gap longer than two intervals and the last answer (from, to, last_ok:
seconds since ``start``, the probe's CLOCK_MONOTONIC start, which other
processes on this machine share).
TIMEOUT: how long one request may take (default 2 s).
Any HTTP answer counts: the probe asks "is the service there", not "what did
it say".
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import time
from urllib.parse import urlsplit


def tls_context() -> ssl.SSLContext | None:
    """For an https URL: the CA and client certificate named by KS_PROBE_CA,
    KS_PROBE_CERT and KS_PROBE_KEY (the lab's Kubernetes API: a real query, as
    an authenticated client, not just a TCP answer)."""
    ca = os.environ.get("KS_PROBE_CA")
    if not ca:
        return None
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(os.environ["KS_PROBE_CERT"], os.environ["KS_PROBE_KEY"])
    return ctx


def once(
    host: str, port: int, path: str, timeout: float, tls: ssl.SSLContext | None = None
) -> str | None:
    """None when an HTTP answer came back (over TLS: a 200), else why not."""
    try:
        conn: http.client.HTTPConnection
        if tls is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        conn.close()
        if tls is not None and response.status != 200:
            return f"HTTP {response.status}"
    except OSError as error:
        return type(error).__name__
    except http.client.HTTPException as error:
        return type(error).__name__
    return None


def main() -> None:
    url = urlsplit(sys.argv[1])
    interval, limit, stop = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
    tls = tls_context() if url.scheme == "https" else None
    host, port, path = url.hostname or "", url.port or 80, url.path or "/"
    start = time.monotonic()
    last_ok = start
    longest_gap = 0.0
    requests = 0
    failures: list[tuple[float, str]] = []
    gaps: list[tuple[float, float]] = []
    while time.monotonic() - start < limit and not os.path.exists(stop):
        sent = time.monotonic()
        why = once(host, port, path, timeout=timeout, tls=tls)
        requests += 1
        now = time.monotonic()
        if why is None:
            longest_gap = max(longest_gap, now - last_ok)
            if now - last_ok > 2 * interval and len(gaps) < 20:
                gaps.append((round(last_ok - start, 3), round(now - start, 3)))
            last_ok = now
        else:
            failures.append((round(sent - start, 2), why))
        time.sleep(max(0.0, interval - (time.monotonic() - sent)))
    print(
        json.dumps(
            {
                "requests": requests,
                "failures": len(failures),
                "longest_gap_s": round(longest_gap, 2),
                "seconds": round(time.monotonic() - start, 1),
                "first_failures": failures[:5],
                "gaps": gaps,
                "start": start,
                "last_ok": round(last_ok - start, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
