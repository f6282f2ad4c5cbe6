"""Webhooks: the events an on-call person acts on, POSTed as signed JSON.

A webhook is a URL, a shared secret and the event kinds it wants
(:class:`bsi.domain.events.EventKind`: typically ``rollout-halted``,
``supplement-withdrawn``, ``wave-advanced``, ``enforcement-deadline-passed``,
``device-failed``). Each process's :meth:`Webhooks.deliver` (every
``webhook_seconds``) sends every webhook its events after the last one it
acknowledged, oldest first, one POST per event; before each POST the process
claims it in the database (:data:`CLAIM_SECONDS`), so with several workers one
sends it::

    POST <url>
    Content-Type: application/json
    X-Bsi-Event: rollout-halted
    X-Bsi-Delivery: 42                       (the event's id: deliveries may repeat)
    X-Bsi-Signature: sha256=<hex HMAC-SHA256(secret, body)>

    {"id": 42, "at": "...", "kind": "rollout-halted", "actor": "automatic",
     "device": null, "platform": "debian", "supplement": "12A100b",
     "reason": "...", "detail": {...}}

A 2xx acknowledges the event; anything else (or no answer within
:data:`TIMEOUT_SECONDS`) is retried with exponential backoff
(:func:`backoff`: 2, 4, 8 ... seconds, at most :data:`MAX_BACKOFF_SECONDS`),
and the webhook's later events wait, so they arrive in order. Delivery is at
least once (a process killed between the POST and its acknowledgement, or a
POST outlasting its claim, sends it again): a receiver drops a repeated
``X-Bsi-Delivery``. The signature
is the GitHub-style HMAC-SHA256 of the exact body bytes (RFC 2104).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from bsi.domain.events import EventKind
from bsi.errors import InvalidInput
from bsi.store.rollouts import EventFilter, RolloutStore, StoredEvent, StoredWebhook

log = logging.getLogger("bsi.webhooks")

SIGNATURE_HEADER = "X-Bsi-Signature"
EVENT_HEADER = "X-Bsi-Event"
DELIVERY_HEADER = "X-Bsi-Delivery"
TIMEOUT_SECONDS = 10.0
CLAIM_SECONDS = 6 * TIMEOUT_SECONDS
"""How long one process's claim on sending a webhook's next event lasts (a POST's
connect, write, read and pool timeouts are each :data:`TIMEOUT_SECONDS`)."""
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 100
SECRET_LENGTHS = (16, 128)

Post = Callable[[str, bytes, dict[str, str]], int]
"""Send one POST (url, body, headers); the HTTP status, or raise OSError/httpx.HTTPError."""


def sign(secret: str, body: bytes) -> str:
    """The ``X-Bsi-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int) -> timedelta:
    """How long to wait after ``attempts`` failed deliveries: 2^attempts s, capped."""
    return timedelta(seconds=min(2.0 ** min(attempts, 32), MAX_BACKOFF_SECONDS))


def event_body(stored: StoredEvent) -> dict[str, Any]:
    """One event as the admin API and webhooks show it."""
    e = stored.event
    return {
        "id": stored.id,
        "at": e.at.isoformat(),
        "kind": e.kind,
        "actor": e.actor,
        "device": e.device_id,
        "platform": e.platform,
        "supplement": e.build,
        "reason": e.reason,
        "detail": e.detail,
    }


def read_webhook(document: object) -> tuple[str, str, frozenset[str]]:
    """``(url, secret, kinds)`` from ``{"url", "secret", "kinds": [...]}``; :class:`InvalidInput`
    names what is wrong."""
    if not isinstance(document, dict):
        raise InvalidInput(f"webhook: expected an object, found {type(document).__name__}")
    unknown = sorted(set(document) - {"url", "secret", "kinds"})
    if unknown:
        raise InvalidInput(f"webhook: unknown field {unknown[0]!r}", hint="url, secret, kinds")
    url, secret, kinds = document.get("url"), document.get("secret"), document.get("kinds")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 512:  # type: ignore[arg-type]
        raise InvalidInput(
            f"webhook.url: {url!r} is not an http(s) URL", hint="e.g. https://oncall.example/bsi"
        )
    low, high = SECRET_LENGTHS
    if not isinstance(secret, str) or not low <= len(secret) <= high:
        raise InvalidInput(
            f"webhook.secret: expected {low} to {high} characters",
            hint="the receiver checks X-Bsi-Signature with it",
        )
    known = {k.value for k in EventKind}
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise InvalidInput(
            "webhook.kinds: expected a non-empty list of event kinds",
            hint="e.g. rollout-halted, supplement-withdrawn, wave-advanced, device-failed",
        )
    wrong = sorted(set(kinds) - known)
    if wrong:
        raise InvalidInput(
            f"webhook.kinds: no event kind {wrong[0]!r}", hint="known: " + ", ".join(sorted(known))
        )
    assert isinstance(url, str)
    return url, secret, frozenset(kinds)


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    response = httpx.post(url, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
    return response.status_code


class Webhooks:
    """Configured webhooks and their delivery (see the module)."""

    def __init__(
        self, store: RolloutStore, clock: Callable[[], datetime], post: Post = _post
    ) -> None:
        self.store = store
        self.clock = clock
        self._post = post

    def add(self, document: object, actor: str) -> StoredWebhook:
        """A new webhook, delivering events from now on (not the history before it)."""
        url, secret, kinds = read_webhook(document)
        return self.store.add_webhook(url, secret, kinds, actor, self.clock())

    def remove(self, webhook_id: int) -> None:
        self.store.remove_webhook(webhook_id)

    def list(self) -> list[StoredWebhook]:
        return self.store.webhooks()

    def deliver(self) -> int:
        """Send every webhook whose retry time has come its pending events; returns how
        many were acknowledged."""
        now, sent = self.clock(), 0
        for hook in self.store.webhooks():
            if hook.retry_at is not None and hook.retry_at > now:
                continue
            sent += self._deliver(hook, now)
        return sent

    def _deliver(self, hook: StoredWebhook, now: datetime) -> int:
        pending = self.store.events(EventFilter(kinds=hook.kinds, after=hook.cursor, limit=BATCH))
        sent = 0
        for stored in pending:
            claimed_at = self.clock()
            until = claimed_at + timedelta(seconds=CLAIM_SECONDS)
            if not self.store.claim_webhook(hook.id, hook.cursor, claimed_at, until):
                return sent  # another worker sends it (or acknowledged it already)
            body = json.dumps(event_body(stored), sort_keys=True).encode()
            headers = {
                "Content-Type": "application/json",
                EVENT_HEADER: stored.event.kind,
                DELIVERY_HEADER: str(stored.id),
                SIGNATURE_HEADER: sign(hook.secret, body),
            }
            try:
                status = self._post(hook.url, body, headers)
                problem = None if 200 <= status < 300 else f"answered HTTP {status}"
            except (OSError, httpx.HTTPError) as error:
                problem = f"{type(error).__name__}: {error}"
            if problem is not None:
                attempts = hook.attempts + 1
                log.warning(
                    "webhook %s: event %d not delivered (%s); attempt %d, next in %s",
                    hook.url,
                    stored.id,
                    problem,
                    attempts,
                    backoff(attempts),
                )
                self.store.webhook_failed(hook.id, attempts, now + backoff(attempts), problem)
                return sent
            self.store.webhook_delivered(hook.id, stored.id)
            hook = hook.acknowledged(stored.id)
            sent += 1
        return sent


def shown(hooks: Iterable[StoredWebhook]) -> list[dict[str, Any]]:
    """Webhooks as the admin API lists them (never the secret)."""
    return [
        {
            "id": h.id,
            "url": h.url,
            "kinds": sorted(h.kinds),
            "created_by": h.created_by,
            "delivered_through": h.cursor,
            "failed_attempts": h.attempts,
            "retry_at": None if h.retry_at is None else h.retry_at.isoformat(),
            "last_error": h.last_error,
        }
        for h in hooks
    ]
