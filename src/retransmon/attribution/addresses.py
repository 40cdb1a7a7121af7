"""Addresses as the kernel stores them, in the text form labels use."""

from __future__ import annotations

import ipaddress

AF_INET = 2
AF_INET6 = 10


def decode_address(family: int, raw: bytes) -> tuple[int, str]:
    """(ip_version, canonical text) of a 16-byte kernel address field.

    IPv4 sits in the first four bytes. An IPv4-mapped IPv6 address
    (``::ffff:a.b.c.d``) is reported as the IPv4 address it carries.
    """
    if family == AF_INET:
        return 4, str(ipaddress.IPv4Address(raw[:4]))
    if family == AF_INET6:
        addr = ipaddress.IPv6Address(raw[:16])
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return 4, str(mapped)
        return 6, str(addr)
    raise ValueError(f"unknown address family {family}")


def encode_address(text: str) -> tuple[int, bytes]:
    """(family, 16-byte field) for an address in text form; the inverse of decode_address."""
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        return AF_INET, addr.packed + bytes(12)
    return AF_INET6, addr.packed
