"""Which IP addresses a webhook may reach: pure classification, no I/O (the SSRF rule).

An endpoint is refused when any address its host resolves to is not a public one: loopback,
private ranges, link-local (where cloud metadata services live), shared (CGNAT), multicast,
reserved and unspecified addresses. IPv6 forms that embed an IPv4 address (mapped, 6to4,
Teredo, NAT64) are judged by the address they embed, so ::ffff:127.0.0.1 is loopback.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints, named apart so the refusal says what was at stake. Most are
# link-local or private anyway; Alibaba's sits in the shared (CGNAT) range.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.123", "fd00:ec2::254", "100.100.100.200"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_ip(text: str) -> IPAddress | None:
    """The address `text` spells (an IPv6 one may carry brackets or a %zone), else None."""
    text = text.strip().removeprefix("[").removesuffix("]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _embedded(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(address: str | IPAddress) -> str | None:
    """Why a webhook may not connect to `address` ("loopback", "private", ...), or None when
    it is a public address. Text that is no IP address at all is refused too."""
    ip = parse_ip(address) if isinstance(address, str) else address
    if ip is None:
        return "not an IP address"
    inner = _embedded(ip)
    if inner is not None:
        reason = refusal(inner)
        return None if reason is None else f"{reason} (embedded in {ip})"
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if not ip.is_global:  # shared (100.64/10), reserved, documentation, benchmarking ...
        return "not publicly routable"
    return None
