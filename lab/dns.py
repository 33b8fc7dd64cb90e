"""The lab's DNS: a UDP pod stand-in (a worker serves it on the pod's port, as
CoreDNS would) and the clients' query. Messages are dnspython's.

The responder answers every A question with one fixed address and logs each
query's peer (the address the pod saw, after the LB and the node's DNAT), one
line per query, the way the HTTP stand-in's access log does.

    python -m lab.dns serve BIND PORT LOG     (in a worker's namespace)
    python -m lab.dns query SERVER PORT NAME  (in a client's namespace)
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rrset

#: The address every answer carries (a Service address of the lab's cluster).
ANSWER = "10.96.0.10"
#: A serving stand-in's bound: it exits after this long (the lab is down by then).
SERVE_LIMIT = 6 * 3600


def serve(bind: str, port: int, log: Path, limit: float = SERVE_LIMIT) -> int:
    """Answer queries until ``limit`` seconds passed; returns the number answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    sock.settimeout(1.0)
    answered = 0
    end = time.monotonic() + limit
    with open(log, "a", buffering=1) as out:
        while time.monotonic() < end:
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException as e:
                out.write(f"{peer[0]} malformed {type(e).__name__}\n")
                continue
            reply = dns.message.make_response(query)
            for q in query.question:
                if q.rdtype == dns.rdatatype.A:
                    reply.answer.append(dns.rrset.from_text(q.name, 5, "IN", "A", ANSWER))
            sock.sendto(reply.to_wire(), peer)
            answered += 1
            names = ",".join(str(q.name) for q in query.question)
            out.write(f"{peer[0]} {names} answered\n")
    return answered


def query(server: str, port: int, name: str, timeout: float = 2.0) -> str | None:
    """The A answer for ``name`` from ``server:port``, or None after ``timeout``."""
    q = dns.message.make_query(name, dns.rdatatype.A)
    try:
        reply = dns.query.udp(q, server, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None
    for rrset in reply.answer:
        for rdata in rrset:
            return str(rdata)
    return ""


def peers(log_text: str) -> list[str]:
    """The peer address of each answered query in a stand-in's log, in order."""
    return [line.split()[0] for line in log_text.splitlines() if line.endswith(" answered")]


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "serve":
        serve(argv[1], int(argv[2]), Path(argv[3]))
        return 0
    if len(argv) == 4 and argv[0] == "query":
        got = query(argv[1], int(argv[2]), argv[3])
        if got is None:
            print("no answer", file=sys.stderr)
            return 1
        print(got)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
