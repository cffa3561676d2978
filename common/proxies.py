"""Who sent a request: forwarded headers are believed only from the proxies we run.

A proxy in front of gunicorn says whom it is forwarding for (`X-Forwarded-For`, appended) and
how the client reached it (`X-Forwarded-Proto`); anyone else who sends those headers is lying
to us, and would otherwise pass as this machine (`/metrics` without a token) or as someone new
at every request (past the patient pages' rate limit and the login lockout). Only a peer in
`TRUSTED_PROXIES` (default: this machine's loopback) is believed.
"""

import functools
import ipaddress

from django.conf import settings

# What a proxy says about the client; dropped from a request that did not come from one.
FORWARDED_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_REAL_IP",
    "HTTP_FORWARDED",
)


@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _address(text: str):
    """An IP address as a proxy writes it (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted_proxy(address) -> bool:
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    return address is not None and any(address in network for network in networks)


def client_address(request) -> str:
    """The client's IP address: the connection's peer, unless the peer is a trusted proxy;
    then the `X-Forwarded-For` entries read from the right (each proxy appends the one it
    saw), past every trusted proxy, to the first that is not one. An entry that is not an
    address stops the walk at the proxy that wrote it. Always a valid address, or ""."""
    peer = _address(request.META.get("REMOTE_ADDR", ""))
    if peer is None:
        return ""
    client = peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if is_trusted_proxy(peer) and forwarded:
        for entry in reversed(forwarded.split(",")[-20:]):
            hop = _address(entry)
            if hop is None:
                break
            client = hop
            if not is_trusted_proxy(hop):
                break
    return str(client)


def client_is_this_machine(request) -> bool:
    return client_address(request) in ("127.0.0.1", "::1")


class ForwardedHeadersMiddleware:
    """First of all middleware: a request whose peer is not a trusted proxy loses its
    forwarded headers before anything reads them (Django's SECURE_PROXY_SSL_HEADER among
    them, which would otherwise believe `X-Forwarded-Proto: https` from anyone)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not is_trusted_proxy(_address(request.META.get("REMOTE_ADDR", ""))):
            for header in FORWARDED_HEADERS:
                request.META.pop(header, None)
        return self.get_response(request)
