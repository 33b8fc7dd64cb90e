"""A bounded HTTP load: new TCP connection per request (what an L4 LB sees).

    python -m lab.load URL [REQUESTS] [CONCURRENCY] [SECONDS]

Prints one JSON line: requests done, errors, seconds, requests per second.
Stops at REQUESTS or SECONDS, whichever comes first. Run it inside a lab
namespace (ip netns exec ks-host01 ...): it only targets the URL it is given.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    url = urlsplit(sys.argv[1])
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
    lock = threading.Lock()
    counts = {"left": total, "ok": 0, "errors": 0}
    start = time.monotonic()

    def run() -> None:
        while time.monotonic() - start < limit:
            with lock:
                if counts["left"] <= 0:
                    return
                counts["left"] -= 1
            try:
                conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=3)
                conn.request("GET", url.path or "/")
                ok = conn.getresponse().read().find(b"Welcome to nginx") >= 0
                conn.close()
            except OSError:
                ok = False
            with lock:
                counts["ok" if ok else "errors"] += 1

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit + 10)
    seconds = time.monotonic() - start
    done = counts["ok"]
    print(
        json.dumps(
            {
                "ok": done,
                "errors": counts["errors"],
                "seconds": round(seconds, 2),
                "rps": round(done / seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
