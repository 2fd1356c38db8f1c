"""Signed webhooks: which destinations are allowed, the signature, the owners' secrets, and one
try of a delivery (`deliver`, the body of the `labtrain.deliver_webhook` task).

A destination must match LABTRAIN_WEBHOOK_ALLOW (checked by the API when a spec names it, and
again before every try, since the setting may have changed), be http or https without
credentials, and never be a link-local or cloud-metadata address, even when allowed. The host
is resolved at send time, every address it resolves to is checked, and the POST goes to the
address checked (the Host header and TLS name stay the URL's), so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot reach a forbidden address.

The signature (Stripe's scheme): `X-Labtrain-Signature: t=<unix seconds>,v1=<hex>`, where
`<hex>` is HMAC-SHA256 under the owner's secret of `"<t>.<body>"`; a receiver recomputes it
over the raw body and refuses a `t` outside its replay window.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

import httpx
from celery import Celery
from sqlalchemy.orm import Session

from core.repositories import webhooks as repo
from core.settings import Settings, get_settings
from core.tables import utcnow

log = logging.getLogger("labtrain.webhooks")

DELIVER_TASK = "labtrain.deliver_webhook"
SIGNATURE_HEADER = "X-Labtrain-Signature"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Cloud metadata services: never a destination, whatever the allow-list says. The link-local
# ranges (169.254.169.254 of AWS, GCP and Azure among them) are refused as ranges.
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)  # AWS IPv6, Alibaba, Oracle


class DestinationRefused(ValueError):
    """A URL that may not receive webhooks; the message says why and what would be accepted."""


# -- the allow-list and the checks ---------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    host: str  # fnmatch pattern, lower case
    port: str | None  # "*", digits, or None: the scheme's default port

    def matches(self, host: str, port: int, scheme: str) -> bool:
        if not fnmatchcase(host, self.host):
            return False
        if self.port == "*":
            return True
        return port == (int(self.port) if self.port is not None else DEFAULT_PORTS[scheme])


def parse_allow(value: str) -> list[Pattern]:
    """`host[:port]` items separated by commas: `127.0.0.1:*`, `hooks.example.org`, `*.lab.org:8443`,
    `[::1]:*`. No port: the scheme's default (80 or 443)."""
    patterns: list[Pattern] = []
    for raw in value.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        else:
            host, sep, port_part = item.rpartition(":")
            if not sep or not (port_part == "*" or port_part.isdigit()):
                host, port = item, None
            else:
                port = port_part
        patterns.append(Pattern(host, port or None))
    return patterns


def forbidden_address(address: str) -> str | None:
    """Why an IP address may never receive a webhook, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is link-local (169.254.0.0/16, fe80::/10: cloud metadata lives there)"
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a host"
    return None


def check_url(url: str, settings: Settings) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable destination, else DestinationRefused. Resolves nothing."""
    allow = parse_allow(settings.webhook_allow)
    if not allow:
        raise DestinationRefused(
            "webhooks are off on this service: LABTRAIN_WEBHOOK_ALLOW is empty; an operator allows "
            "destinations by host pattern, e.g. LABTRAIN_WEBHOOK_ALLOW=hooks.example.org,127.0.0.1:* "
            "(on the API and the workers)"
        )
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise DestinationRefused("the URL contains a space or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise DestinationRefused(f"the scheme must be http or https, not {scheme[:20]!r}")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("the URL must not carry credentials (user:password@)")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise DestinationRefused("the URL has no host")
    port = port or DEFAULT_PORTS[scheme]
    if host in METADATA_HOSTS:
        raise DestinationRefused(f"{host} is a cloud metadata service")
    try:
        why = forbidden_address(host)
    except ValueError:
        why = None  # a name: its addresses are checked when it is resolved, at send time
    if why is not None:
        raise DestinationRefused(why)
    if not any(p.matches(host, port, scheme) for p in allow):
        raise DestinationRefused(
            f"{host[:100]}:{port} is not an allowed webhook destination "
            f"(LABTRAIN_WEBHOOK_ALLOW={settings.webhook_allow[:200]}); an operator adds it there"
        )
    return scheme, host, port


def resolve_checked(host: str, port: int) -> str:
    """One address of `host`, every address it resolves to checked (DestinationRefused)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        why = forbidden_address(address)
        if why is not None:
            raise DestinationRefused(f"{host} resolves to {why}")
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    return addresses[0]


# -- signatures and secrets --------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Labtrain-Signature value of `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, tolerance_seconds: float = 300, now: float | None = None) -> bool:
    """What a receiver does (the README shows the same): the HMAC matches and `t` is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def owner_secret(session: Session, settings: Settings, owner: str) -> str:
    """The owner's signing secret: derived from LABTRAIN_WEBHOOK_SECRET when it is set (every
    process derives the same), else random and stored in the database on first use."""
    if settings.webhook_secret is not None and settings.webhook_secret.get_secret_value():
        key = settings.webhook_secret.get_secret_value().encode()
        return "whsec_" + hmac.new(key, f"labtrain-webhook-owner:{owner}".encode(), hashlib.sha256).hexdigest()
    return repo.owner_secret(session, owner, lambda: "whsec_" + secrets.token_hex(32))


# -- sending -----------------------------------------------------------------------------------

_celery_apps: dict[int, Celery] = {}  # by process id: a forked child never shares its parent's connections


def _celery() -> Celery:
    from core.broker import build_celery

    pid = os.getpid()
    if pid not in _celery_apps:
        _celery_apps[pid] = build_celery(get_settings(), "labtrain-webhooks")
    return _celery_apps[pid]


def send_deliveries(ids: list[str], *, countdown: float | None = None, celery: Celery | None = None) -> None:
    """Ask a worker to try these deliveries (committed rows). A send that fails is logged only:
    the rows stay pending and the reconciler sends them again."""
    try:
        app = celery or _celery()
        for delivery_id in ids:
            app.send_task(DELIVER_TASK, args=[delivery_id], queue="cpu", countdown=countdown)
    except Exception:
        log.exception("could not send webhook deliveries %s; the reconciler will", ids)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_seconds: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """No answer, a 5xx or a 429; never another 4xx, a redirect or a refused destination."""
        if self.status_code is None:
            return not (self.error or "").startswith("refused:")
        return self.status_code >= 500 or self.status_code == 429


def post(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> Outcome:
    """One POST of `body` to `url`, to the address checked (see the module's docstring)."""
    started = time.monotonic()
    try:
        scheme, host, port = check_url(url, settings)
        address = resolve_checked(host, port)
        target = httpx.URL(url).copy_with(host=address)
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        # trust_env off: a proxy from the environment would connect where it likes.
        with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False) as client:
            host_header = host if port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
            response = client.post(
                target, content=body, headers={**headers, "Host": host_header}, extensions=extensions
            )
        return Outcome(response.status_code, None, time.monotonic() - started)
    except DestinationRefused as exc:
        return Outcome(None, f"refused: {exc}", time.monotonic() - started)
    except (httpx.HTTPError, OSError) as exc:
        return Outcome(None, f"{type(exc).__name__}: {str(exc)[:300]}", time.monotonic() - started)


def deliver(delivery_id: str, settings: Settings | None = None) -> str:
    """One try of a delivery (the task's body); returns what happened. A delivery already
    delivered, given up, or held by another sender is skipped: a duplicate message is harmless."""
    from core.db import in_session

    settings = settings or get_settings()
    lease = settings.webhook_timeout_seconds + 30

    def claim_it(session: Session) -> tuple[repo.Claimed, str] | None:
        claimed = repo.claim(session, delivery_id, lease_seconds=lease)
        return None if claimed is None else (claimed, owner_secret(session, settings, claimed.owner))

    held = in_session(claim_it, settings)
    if held is None:
        log.info("webhook delivery %s: not pending, not due or held by another sender: skipped", delivery_id)
        return "skipped"
    claimed, secret = held
    body = json.dumps(claimed.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "labtrain-webhooks",
        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        "X-Labtrain-Event": str(claimed.payload.get("event")),
        "X-Labtrain-Delivery": claimed.id,
    }
    outcome = post(claimed.url, body, headers, settings)
    number = claimed.attempts + 1
    retry = not outcome.delivered and outcome.retryable and number < settings.webhook_max_attempts
    wait = settings.webhook_backoff_seconds * 2 ** (number - 1)
    result = "delivered" if outcome.delivered else "pending" if retry else "failed"

    def record(session: Session) -> bool:
        return repo.record_attempt(
            session,
            delivery_id,
            number=number,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_seconds=outcome.duration_seconds,
            outcome=result,
            next_attempt_at=utcnow() + timedelta(seconds=wait),
        )

    recorded = in_session(record, settings)
    log.info(
        "webhook delivery %s try %d: %s (%s)",
        delivery_id,
        number,
        result,
        outcome.status_code if outcome.status_code is not None else outcome.error,
    )
    if recorded and retry:
        send_deliveries([delivery_id], countdown=wait)
    return result
