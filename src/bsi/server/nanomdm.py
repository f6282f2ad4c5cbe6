"""NanoMDM as bsi's front door for Apple devices: its keys, its signatures, its paths.

NanoMDM (``micromdm/nanomdm``) forwards a device's Declarative Management
check-in to the URL in its ``-dm`` flag: the device's ``Endpoint``
(``tokens``, ``declaration-items``, ``declaration/<category>/<identifier>``,
``status``) is resolved against that URL as an RFC 3986 reference, ``GET``
without a body and ``PUT`` with one, the enrollment in ``X-Enrollment-ID``,
``X-Enrollment-Type`` and (user channels) ``X-Enrollment-ParentID``.

Three flags of NanoMDM carry keys, each used as the raw bytes of the flag's
string:

- ``-dm-send-hmac-key``: NanoMDM signs each request body, base64
  HMAC-SHA256 in ``X-Hmac-Signature``; bsi verifies it.
- ``-dm-recv-hmac-key``: NanoMDM verifies the same header on each response
  body, before it looks at the status code, so every response (errors and
  empty bodies included) must be signed, or the device's check-in fails.
- ``-webhook-hmac-key``: NanoMDM signs each webhook event the same way.

A key file given to bsi holds exactly the string given to the NanoMDM flag;
one final line ending (which ``echo`` and editors add) is not part of it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bsi.errors import InvalidInput, Unauthorized
from bsi.server.http import sign_hmac, verify_hmac

log = logging.getLogger("bsi.server")

HMAC_HEADER = "X-Hmac-Signature"
"""NanoMDM's header for a body's base64 HMAC-SHA256 (requests, responses and webhooks)."""

DDM_ENDPOINTS = ("tokens", "declaration-items", "declaration", "status")
"""The first path segment of every ``Endpoint`` an Apple device asks NanoMDM to forward."""


def read_key_file(path: Path, what: str = "NanoMDM HMAC key") -> bytes:
    """The key a NanoMDM flag holds, from a file: its bytes, less one final line ending.

    NanoMDM takes ``[]byte(flag)``: any length, nothing trimmed. So bsi trims
    nothing else either (a key with a trailing space is a different key), and
    only refuses an empty key, which NanoMDM treats as "no signing".

    Raises :class:`~bsi.errors.InvalidInput` naming the file when it cannot be
    read or holds no key.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read the {what} file {path}: {error}") from error
    for ending in (b"\r\n", b"\n"):
        if raw.endswith(ending):
            raw = raw[: -len(ending)]
            break
    if not raw:
        raise InvalidInput(
            f"the {what} file {path} is empty",
            hint="write the exact string given to NanoMDM's flag into it",
        )
    if len(raw) < 16:
        log.warning("the %s in %s is only %d bytes: use 32 random bytes", what, path, len(raw))
    return raw


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Parse ``--nanomdm-allow-unsigned-from`` values; InvalidInput names a bad one."""
    parsed = []
    for cidr in cidrs:
        try:
            parsed.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as error:
            raise InvalidInput(
                f"{cidr!r} is not an IP address or network",
                hint="write 127.0.0.1, 10.0.0.0/8 or fd00::/8",
            ) from error
    return tuple(parsed)


@dataclass(frozen=True, slots=True)
class ForwardingTrust:
    """What bsi accepts as NanoMDM speaking: a body signed with ``key``, or an
    unsigned body from an address in ``unsigned_from`` (NanoMDM's default is to
    sign nothing, and KMFDDM-style setups run that way).

    A signature that does not match is refused from every address. Neither
    proves *which* enrollment is speaking (NanoMDM signs the body only), which
    is why enrollment ids must be known and reports must not contradict them.
    """

    key: bytes | None = None
    unsigned_from: tuple[Network, ...] = ()
    what: str = "NanoMDM forwarding"

    def check(self, body: bytes, signature: str | None, source: str | None) -> None:
        """Raise :class:`~bsi.errors.Unauthorized` unless the request may be NanoMDM's."""
        if signature and self.key is not None:
            verify_hmac(self.key, body, signature)
            return
        if self._unsigned_allowed(source):
            return
        if self.key is None and not self.unsigned_from:
            raise Unauthorized(
                f"this bsi accepts no {self.what}",
                hint="give bsi serve the key NanoMDM signs with, or allow unsigned "
                "requests from NanoMDM's address (--nanomdm-allow-unsigned-from)",
            )
        if self.key is None:
            raise Unauthorized(f"unsigned {self.what} is not allowed from {source}")
        raise Unauthorized(f"{HMAC_HEADER} is required for {self.what}")

    def _unsigned_allowed(self, source: str | None) -> bool:
        if source is None or not self.unsigned_from:
            return False
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in network for network in self.unsigned_from)


class SignResponses:
    """Sign every response under ``prefixes`` as NanoMDM's ``-dm-recv-hmac-key`` checks it.

    The whole body is buffered (DDM answers are small) and its base64
    HMAC-SHA256 sent in ``X-Hmac-Signature``. It wraps the whole app, body
    limit included, and answers an unhandled exception with a signed 500
    itself, so no response on these paths leaves unsigned.
    """

    def __init__(self, app: ASGIApp, key: bytes, prefixes: Iterable[str]) -> None:
        self.app = app
        self.key = key
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                assert start is not None
                await self._send_signed(send, start, b"".join(chunks))

        try:
            await self.app(scope, receive, buffered)
        except Exception:
            if start is not None:
                raise
            log.exception("unhandled error on %s", scope["path"])
            body = b'{"error": "InternalError", "message": "internal server error"}'
            internal = {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"application/json")],
            }
            await self._send_signed(send, internal, body)

    async def _send_signed(self, send: Send, start: Message, body: bytes) -> None:
        headers = [
            (name, value)
            for name, value in start.get("headers", [])
            if name.lower() not in (b"content-length", HMAC_HEADER.lower().encode())
        ]
        headers.append((HMAC_HEADER.lower().encode(), sign_hmac(self.key, body).encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
