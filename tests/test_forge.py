"""The lab's forged packets (lab/forge.py) are what their specifications say:
a forged advert the LBs drop proves nothing if it was malformed anyway."""

from __future__ import annotations

import socket
import struct

from lab import forge


def test_a_vrrp3_advert_carries_a_valid_checksum_over_its_pseudo_header() -> None:
    pkt = forge.vrrp3_advert("172.16.0.11", "172.16.0.252", 52, 254, 0.1, ["172.16.0.254"])
    assert len(pkt) == 8 + 4
    ver_type, vrid, prio, count, interval = struct.unpack("!BBBBH", pkt[:6])
    assert (ver_type >> 4, ver_type & 0xF) == (3, 1)  # VRRPv3, advertisement
    assert (vrid, prio, count, interval & 0xFFF) == (52, 254, 1, 10)  # 10 centiseconds
    assert socket.inet_ntoa(pkt[8:12]) == "172.16.0.254"
    pseudo = socket.inet_aton("172.16.0.11") + socket.inet_aton("172.16.0.252")
    pseudo += struct.pack("!BBH", 0, forge.VRRP_PROTO, len(pkt))
    assert forge.checksum(pseudo + pkt) == 0  # a receiver's check
    # the checksum covers the destination: another peer gets another packet
    other = forge.vrrp3_advert("172.16.0.11", "172.16.0.253", 52, 254, 0.1, ["172.16.0.254"])
    assert other[6:8] != pkt[6:8] and other[:6] == pkt[:6]


def test_the_checksum_is_rfc_1071s() -> None:
    # RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d
    assert forge.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert forge.checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with zero


def test_a_sync_message_is_a_version_1_message_with_one_ipv4_connection() -> None:
    msg = forge.sync_message(
        51, ("192.168.0.98", 40001), ("192.168.0.1", 30080), ("172.16.0.12", 30080), 0x6B730002
    )
    reserved, syncid, size, nr, version, spare = struct.unpack("!BBHBbH", msg[:8])
    assert (reserved, syncid, size, nr, version, spare) == (0, 51, len(msg), 1, 1, 0)
    conn = msg[8:]
    assert len(conn) == 36  # struct ip_vs_sync_v4
    kind, proto, ver_size, flags, state = struct.unpack("!BBHIH", conn[:10])
    assert (kind, proto, ver_size >> 12, ver_size & 0xFFF) == (0, socket.IPPROTO_TCP, 0, 36)
    assert (flags, state) == (0, forge.TCP_ESTABLISHED)
    cport, vport, dport, fwmark, timeout = struct.unpack("!HHHII", conn[10:24])
    assert (cport, vport, dport, fwmark, timeout) == (40001, 30080, 30080, 0x6B730002, 60)
    assert [socket.inet_ntoa(conn[i : i + 4]) for i in (24, 28, 32)] == [
        "192.168.0.98",
        "192.168.0.1",
        "172.16.0.12",
    ]
