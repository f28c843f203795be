"""Where webhooks may deliver: public addresses only, unless the operator allows others.

A webhook URL is a tenant's choice, and the controller POSTs to it from inside the
cluster: to a loopback, private, link-local (a cloud's metadata service), multicast or
unspecified address that would let a tenant reach what only the controller can reach. So
such targets are refused unless `allow_private_webhooks` is true in deployment.json (a
deployment whose receivers live on its own network, or tests with a local receiver).

The check is made twice. At registration, on what the URL itself says (an address
literal in any form, or `localhost`): a clear 400. At every delivery, on every address the
host name resolves to then; and the delivery connects to the address that was checked (the
URL's name stays in the Host header and in TLS's SNI and certificate check), so a name that
resolves to a public address first and to 127.0.0.1 later (DNS rebinding) cannot slip
between check and connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

ALLOW_HINT = ("webhooks deliver to public addresses only; an operator can allow others "
              "with \"allow_private_webhooks\": true in deployment.json")


class Refused(Exception):
    """A target the guard refuses; the message says which address and why."""


def refusal(address: str) -> str | None:
    """Why `address` (an IP address) may not be a webhook target; None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone says nothing here
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, hit in [("an unspecified", ip.is_unspecified), ("a loopback", ip.is_loopback),
                      ("a link-local", ip.is_link_local), ("a multicast", ip.is_multicast),
                      ("a private", ip.is_private), ("a non-public", not ip.is_global)]:
        if hit:
            return f"{ip} is {kind} address"
    return None


def literal_refusal(host: str) -> str | None:
    """Why a URL's host may not be a target, from the text alone (no DNS): an address
    literal in any form inet_aton takes (127.1, 0x7f000001 …), or localhost."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is a loopback name"
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None  # a name: checked on what it resolves to, at each delivery
    for *_, sockaddr in infos:
        why = refusal(str(sockaddr[0]))
        if why is not None:
            return why
    return None


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the checked address, with the URL's own name kept."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


async def pin(url: str, allow_private: bool) -> Target:
    """The target of a delivery to `url`: resolved, checked, pinned to one address.

    Raises `Refused` for a refused address, `OSError` when the name does not resolve."""
    parsed = httpx.URL(url)
    if allow_private:
        return Target(parsed)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise Refused(f"refused: {host} resolves to {address}, and {why}; {ALLOW_HINT}")
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Target(parsed.copy_with(host=addresses[0]), {"host": parsed.netloc.decode()},
                  extensions)
