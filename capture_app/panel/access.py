"""Who may use the panel: loopback by default, a token off loopback (pure; the server asks ``check``).

Whoever reaches the panel can start, stop and discard takes, as whoever reaches the control channel can
(docs/control.md, "Trust model"). So:

- bound to a loopback address (the default, 127.0.0.1), a request must come from loopback and name a
  loopback host (``Host: localhost`` / ``127.x.y.z`` / ``[::1]``: a web page elsewhere cannot reach the
  panel through DNS rebinding);
- bound to any other address (``--host 0.0.0.0`` for a phone on the rig's network), every request must
  carry the token (``?token=`` in the URL printed and shown as a QR code, after which the page keeps it
  in a cookie); ``--token`` also demands it on loopback;
- a WebSocket whose ``Origin`` is not the panel itself is refused (another site open in the phone's
  browser cannot drive the panel).

A refused request gets HTTP 403 with the reason and nothing else: no state, no command.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE = "capture_panel_token"
TOKEN_BYTES = 16  # 128 bits, URL-safe base64


def is_loopback(host: str) -> bool:
    """A loopback address or the name ``localhost`` (a literal, no DNS lookup)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _host_name(host_header: str) -> str:
    """The host of a ``Host`` header (``name:port``, ``[v6]:port``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


@dataclass(frozen=True)
class Access:
    """``token`` None: loopback only, no token. Else every request needs it."""

    bind_host: str
    token: str | None

    @classmethod
    def for_bind(cls, bind_host: str, token: str | None = None) -> "Access":
        """Off loopback a token is always required (a new random one unless given)."""
        if not is_loopback(bind_host) and not token:
            token = new_token()
        return cls(bind_host, token or None)

    def check(self, remote: str | None, host_header: str, offered_token: str | None,
              origin: str | None = None, websocket: bool = False) -> str | None:
        """None when the request may proceed, else why it is refused."""
        if self.token is None:
            if remote is None or not is_loopback(remote):
                return f"this panel serves loopback only (bound to {self.bind_host}); {remote} is not loopback"
            if not is_loopback(_host_name(host_header or "")):
                return f"Host {host_header!r} is not a loopback name (use http://127.0.0.1:PORT/)"
        elif not offered_token or not hmac.compare_digest(offered_token.encode(), self.token.encode()):
            return "a token is required: open the URL the panel printed (or scan its QR code)"
        if websocket and origin is not None:
            parts = urlsplit(origin)
            if parts.netloc.lower() != (host_header or "").lower():
                return f"WebSocket from origin {origin!r} refused: only the panel's own page may connect"
        return None
