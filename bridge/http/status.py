"""The documents of GET /status and the readiness probes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.http.upstreams import Upstream, Upstreams


def iso(timestamp: object) -> str | None:
    """A time as ISO 8601 in UTC, to the millisecond (None stays None)."""
    if not isinstance(timestamp, (int, float)):
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def upstream_document(upstream: Upstream) -> dict[str, Any]:
    """One upstream's state, members, addresses and counters."""
    pool = upstream.pool
    config = upstream.config
    members = [member.status() for member in pool.members]
    for document in members:
        document["connected_since"] = iso(document["connected_since"])
    connected = [m.connected_since for m in pool.members if m.connected_since is not None]
    delays = [m.current_delay for m in pool.members if m.current_delay is not None]
    errors = [m.last_error for m in pool.members if m.last_error]
    retry_in = pool.retry_in()
    totals = pool.totals()
    events = upstream.events
    return {
        "upstream": config.upstream_label,
        "required": config.required,
        "state": pool.state(),
        "ready": pool.ready(),
        "connected_since": iso(min(connected)) if connected else None,
        "attempts_since_success": min(m.attempts_since_success for m in pool.members),
        "retry_delay": round(min(delays), 3) if delays else None,
        "retry_in": None if retry_in is None else round(retry_in, 3),
        "last_error": errors[0] if errors else None,
        "pending": pool.pending(),
        "unsent_bytes": pool.unsent(),
        "congested": pool.congested(),
        "counters": {
            "lines_sent": totals.lines_sent,
            "bytes_sent": totals.bytes_sent,
            "frames_received": totals.frames_received,
            "unsolicited": totals.unsolicited,
            "late_replies": totals.late_replies,
            "discarded_replies": totals.discarded_replies,
            "send_errors": totals.send_errors,
            "fences": totals.fences,
            "connection_attempts": totals.attempts,
            "connects": totals.connects,
            "disconnects": totals.disconnects,
            "handshake_failures": totals.handshake_failures,
            "heartbeat_failures": totals.heartbeat_failures,
            "desyncs": totals.desyncs,
            "send_unconfirmed": totals.send_unconfirmed,
        },
        "events": {"subscribers": events.subscribers, "published": events.published,
                   "dropped": events.dropped},
        "members": members,
        "strategy": pool.group.strategy.name,
        "addresses": [{**row, "skipped_until": iso(row["skipped_until"])}
                      for row in pool.address_status()],
        "reply_framing": pool.framing.name,
        "send_replies": pool.send_mode,
        "fence": pool.fence is not None,
        "events_subscriber": _subscriber(upstream),
        "spool": upstream.spool.status() if upstream.spool is not None else None,
    }


def _subscriber(upstream: Upstream) -> dict[str, Any] | None:
    subscriber = upstream.pool.subscriber
    if subscriber is None:
        return None
    document = subscriber.status()
    document["connected_since"] = iso(document["connected_since"])
    document["lines"] = list(upstream.config.events_subscribe)
    document["messages"] = subscriber.counters.unsolicited
    return document


def bridge_document(
    upstreams: Upstreams, *, version: str, uptime: float, inflight: int, lifecycle: str,
    http_counts: dict[str, int], configuration: dict[str, Any],
) -> dict[str, Any]:
    """/status: the bridge, then one entry per upstream.  The upstream named
    default is also described at the top level, as before there were several.

    ``http_counts`` holds ``requests`` (every HTTP request answered), and
    ``work_requests`` and ``work_errors`` (POST /send and /request of any
    upstream answered, and those answered 4xx or 5xx).
    """
    http = {"http_requests": http_counts.get("requests", 0),
            "work_requests": http_counts.get("work_requests", 0),
            "work_errors": http_counts.get("work_errors", 0)}
    documents = {name: upstream_document(upstream) for name, upstream in upstreams.items()}
    document: dict[str, Any] = {
        "version": version,
        "uptime": round(uptime, 3),
        "inflight": inflight,
        "lifecycle": lifecycle,
        "configuration": configuration,
    }
    default = documents.get("default")
    if default is not None:
        document.update(default)
        document["counters"] = {**http, **default["counters"]}
    else:
        document["counters"] = http
    document["upstreams"] = documents
    return document


def readiness(upstream: Upstream) -> dict[str, Any]:
    """One upstream's readiness (without the bridge's lifecycle).  With a
    spool it is ready while the spool takes lines, connected or not."""
    pool = upstream.pool
    spool = upstream.spool
    if spool is not None:
        retry_in = pool.retry_in()
        return {"ready": spool.accepting(), "state": pool.state(), "spool": spool.state(),
                "retry_in": None if retry_in is None or pool.ready() else round(retry_in, 3),
                "connected": pool.connected_count(), "pool_size": len(pool.members)}
    if pool.ready():
        return {"ready": True, "state": "connected", "connected": pool.connected_count(),
                "pool_size": len(pool.members)}
    retry_in = pool.retry_in()
    return {"ready": False, "state": pool.state(),
            "retry_in": None if retry_in is None else round(retry_in, 3),
            "connected": pool.connected_count(), "pool_size": len(pool.members)}


def shutting_down(upstream: Upstream) -> dict[str, Any]:
    pool = upstream.pool
    return {"ready": False, "state": "shutting_down", "retry_in": None,
            "connected": pool.connected_count(), "pool_size": len(pool.members)}


def bridge_readiness(upstreams: Upstreams, refusing: bool) -> dict[str, Any]:
    """/readyz: ready while running and every required upstream is ready.

    With one upstream the document is that upstream's; with several, it is
    the first one not ready (or the first one), named in ``upstream``, plus
    one entry per upstream.
    """
    each = {name: (shutting_down(u) if refusing else readiness(u))
            for name, u in upstreams.items()}
    required = [name for name, u in upstreams.items() if u.config.required]
    failing = [name for name in required if not each[name]["ready"]]
    shown = failing[0] if failing else next(iter(each))
    ready = not refusing and not failing
    if len(each) == 1:
        return {**each[shown], "ready": ready}
    return {"ready": ready, "upstream": shown, **{key: value for key, value in
                                                  each[shown].items() if key != "ready"},
            "upstreams": each}
