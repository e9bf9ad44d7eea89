"""The settings table: every setting's name, default, converter and meaning.

Each setting is either global (the HTTP side, tokens, limits, shutdown,
logs) or per upstream (where and how to connect, how replies are framed):
per-upstream settings may be given for each ``[upstreams.NAME]`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from bridge.config.values import (
    GiB,
    KiB,
    MiB,
    address_list,
    boolean,
    choice,
    factor,
    line_list,
    listen_address,
    non_negative_int,
    optional_seconds,
    optional_text,
    positive_int,
    regex,
    seconds,
    seconds_or_zero,
    upstream_address,
)


@dataclass(frozen=True)
class Setting:
    """One configurable value: its name everywhere, default, and meaning."""

    name: str
    default: Any
    convert: Callable[[object], Any]
    help: str
    metavar: str = "VALUE"
    flag_kind: str = "value"  # "value", "switch" (store_true) or "append"
    #: The flag when it is not --NAME (a repeated flag names one item: --address).
    flag_name: str | None = None

    @property
    def per_upstream(self) -> bool:
        """Whether each upstream has its own value (``[upstreams.NAME]``)."""
        return self.name not in GLOBAL_SETTINGS

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "BRIDGE_" + self.name.upper()


#: Settings of the bridge as a whole; every other setting is per upstream.
GLOBAL_SETTINGS = frozenset({
    "listen", "max_body_bytes", "max_event_backlog", "event_stall_timeout", "event_replay",
    "event_heartbeat", "max_inflight", "request_timeout", "token", "token_file",
    "allow_public", "metrics_auth", "shutdown_delay", "shutdown_grace", "log_level",
    "log_format", "access_log", "ui",
})

SETTINGS: tuple[Setting, ...] = (
    Setting("listen", "127.0.0.1:8080", listen_address,
            "HTTP address: HOST:PORT or a server endpoint string (tcp:, unix:, ssl:)",
            "ADDR"),
    Setting("upstream", "localhost:65432", upstream_address,
            "upstream line server: HOST:PORT or a client endpoint string (tcp:, tls:, unix:); "
            "NAME=ADDR adds a named upstream (repeatable)",
            "ADDR", "append"),
    Setting("addresses", (), address_list,
            "several upstream addresses served as one group, instead of upstream (repeat the "
            "flag; newline-separated in the environment); a host name counts once per address "
            "it resolves to", "ADDR", "append", "--address"),
    Setting("strategy", "failover", choice("failover", "round_robin"),
            "how a group's pool members use its addresses: failover (all on the first healthy "
            "one, in order) or round_robin (spread over the healthy ones)",
            "failover|round_robin"),
    Setting("failback_after", 30.0, seconds_or_zero,
            "with failover, seconds an earlier address must stay healthy before the members "
            "move back to it (0 = never move back)", "SECONDS"),
    Setting("max_connection_age", None, optional_seconds,
            "replace an upstream connection older than this, draining it first (up to 10% "
            "earlier, at random; default off)", "SECONDS"),
    Setting("required", True, boolean,
            "/readyz waits for this upstream to be ready", "BOOL"),
    Setting("delimiter", "crlf", choice("crlf", "lf"),
            "line ending written to the upstream (crlf or lf); both are accepted when reading",
            "crlf|lf"),
    Setting("backoff_initial", 1.0, seconds, "first reconnect delay, seconds", "SECONDS"),
    Setting("backoff_factor", 1.5, factor, "reconnect delay multiplier per failed attempt",
            "FACTOR"),
    Setting("backoff_max", 30.0, seconds, "longest reconnect delay, seconds", "SECONDS"),
    Setting("connect_timeout", 5.0, seconds, "time allowed for one connection attempt, seconds",
            "SECONDS"),
    Setting("max_line_bytes", 64 * KiB, positive_int,
            "longest line accepted, in either direction, bytes", "BYTES"),
    Setting("max_body_bytes", MiB, positive_int, "largest HTTP request body, bytes", "BYTES"),
    Setting("reply_timeout", 5.0, seconds,
            "default wait for the replies of POST /request, seconds (?timeout= overrides)",
            "SECONDS"),
    Setting("max_reply_timeout", 60.0, seconds, "largest ?timeout= a client may ask for, seconds",
            "SECONDS"),
    Setting("stale_reply_timeout", None, optional_seconds,
            "oldest reply this late means the connection is out of step and is closed "
            "(default 3 x reply_timeout)", "SECONDS"),
    Setting("reply_error_pattern", None, regex,
            "regex; a reply matching it turns POST /request into 502 upstream_error "
            "(e.g. ^-ERR)", "REGEX"),
    Setting("reply_framing", "line",
            choice("line", "resp", "memcached", "status", "terminator"),
            "how the upstream frames its replies: line (one line per line sent), resp "
            "(Redis), memcached (text protocol), status (SMTP/FTP numbered replies) or "
            "terminator (until a line matching reply_terminator)",
            "FRAMING"),
    Setting("reply_terminator", None, regex,
            "regex ending each reply with reply_framing terminator (e.g. '^(OK|ERR .*)$')",
            "REGEX"),
    Setting("max_reply_bytes", 16 * MiB, positive_int,
            "largest reply accepted from the upstream; a larger one closes the connection",
            "BYTES"),
    Setting("fence_line", None, optional_text,
            "line written after every request that awaits replies, to verify alignment; "
            "{nonce} in it is replaced by a fresh token (e.g. 'ECHO {nonce}')", "LINE"),
    Setting("fence_expect", None, regex,
            "regex the fence's reply matches, may contain {nonce} (e.g. '^{nonce}$')",
            "REGEX"),
    Setting("send_replies", None, choice("none", "discard", "check"),
            "what the upstream answers to POST /send lines: none, discard (consume them) or "
            "check (consume them, count and publish error replies); default check for resp, "
            "memcached and status, none otherwise", "none|discard|check"),
    Setting("greeting_expect", None, regex,
            "regex the greeting must match: the upstream speaks first on every connection "
            "(SMTP, FTP, POP3) and the connection is ready only after it", "REGEX"),
    Setting("events_subscribe", (), line_list,
            "lines sent on an extra connection after every connect (e.g. 'SUBSCRIBE news'); "
            "everything it receives is published on GET /events (repeat the flag)",
            "LINE", "append"),
    Setting("max_pending", 1000, positive_int,
            "requests awaiting replies per connection before 429 too_many_pending", "N"),
    Setting("discard_send_replies", False, boolean,
            "the same as send_replies discard (kept for compatibility)", "BOOL", "switch"),
    Setting("spool", "off", choice("off", "disk"),
            "disk: POST /send answers 202 once its lines are stored in spool_dir, and they are "
            "delivered when the upstream is connected (at least once, across restarts); off: "
            "503 while the upstream is down", "off|disk"),
    Setting("spool_dir", None, optional_text,
            "the spool's directory, one per upstream and process (required with spool disk; "
            "created if missing)", "PATH"),
    Setting("spool_max_bytes", GiB, positive_int,
            "bytes the spool may hold on disk before POST /send answers 429 spool_full",
            "BYTES"),
    Setting("spool_fsync", "always", choice("always", "never"),
            "always: 202 after an fsync covering the lines (shared by concurrent requests); "
            "never: 202 once the operating system has them (survives kill -9, not a power cut)",
            "always|never"),
    Setting("pool_size", 1, positive_int, "connections kept to the upstream", "N"),
    Setting("min_ready", 1, positive_int, "connected members needed for /readyz to pass", "N"),
    Setting("handshake", (), line_list,
            "lines sent after connecting, before the member is ready (repeat the flag; "
            "newline-separated in the environment)", "LINE", "append"),
    Setting("handshake_expect", None, regex, "regex every handshake reply must match", "REGEX"),
    Setting("handshake_timeout", 5.0, seconds, "wait for each handshake reply, seconds",
            "SECONDS"),
    Setting("heartbeat_interval", None, optional_seconds,
            "send heartbeat_line after this many idle seconds (default off)", "SECONDS"),
    Setting("heartbeat_line", "PING", optional_text, "line sent as heartbeat", "LINE"),
    Setting("heartbeat_expect", None, regex, "regex the heartbeat reply must match", "REGEX"),
    Setting("heartbeat_timeout", 5.0, seconds,
            "wait for the heartbeat reply before reconnecting, seconds", "SECONDS"),
    Setting("max_event_backlog", 1000, positive_int,
            "events waiting for a GET /events subscriber above which it is dropped if its "
            "connection has also taken nothing for event_stall_timeout seconds", "N"),
    Setting("event_stall_timeout", 10.0, seconds,
            "seconds a GET /events subscriber with more than max_event_backlog events waiting "
            "may take nothing before it is dropped; also how long a dropped one has to take "
            "its last bytes before its connection is aborted", "SECONDS"),
    Setting("event_replay", 1000, non_negative_int,
            "recent events kept for GET /events clients that reconnect with Last-Event-ID "
            "(0 = none; at most 64 MiB of them)", "N"),
    Setting("event_heartbeat", 15.0, seconds,
            "seconds between keep-alive comments on GET /events", "SECONDS"),
    Setting("startup_max_attempts", 0, non_negative_int,
            "exit with status 1 if the first connection fails this many times "
            "(0 = keep trying)", "N"),
    Setting("write_high_water", MiB, positive_int,
            "unsent bytes on a connection above which it counts as congested", "BYTES"),
    Setting("write_low_water", 256 * KiB, non_negative_int,
            "unsent bytes below which a congested connection takes traffic again", "BYTES"),
    Setting("max_inflight", 1024, positive_int,
            "POST /send and /request handled at once before 429 overloaded", "N"),
    Setting("request_timeout", 30.0, seconds,
            "time a client has to send a whole request (idle or slow clients are closed)",
            "SECONDS"),
    Setting("token", None, optional_text,
            "bearer token required on every route but /healthz, /readyz and the status page "
            "(/ and its assets; never logged)",
            "TOKEN"),
    Setting("token_file", None, optional_text, "read the bearer token from this file", "PATH"),
    Setting("allow_public", False, boolean,
            "allow listening on a non-loopback address without a token", "BOOL", "switch"),
    Setting("metrics_auth", True, boolean,
            "require the token on GET /metrics too (when a token is set)", "BOOL", "switch"),
    Setting("shutdown_delay", 0.0, seconds_or_zero,
            "after SIGTERM, seconds /readyz reports 503 before new requests are refused",
            "SECONDS"),
    Setting("shutdown_grace", 10.0, seconds_or_zero,
            "after SIGTERM, seconds in-flight requests and upstream flushing may take",
            "SECONDS"),
    Setting("log_level", "info", choice("debug", "info", "warn", "error"),
            "lowest log level written", "LEVEL"),
    Setting("log_format", "text", choice("text", "json"),
            "text (one line per event) or json (one object per line)", "text|json"),
    Setting("access_log", False, boolean,
            "log one line per HTTP request (probe routes are never logged)", "BOOL"),
    Setting("ui", True, boolean,
            "serve the status page to browsers at GET / (off: / answers the JSON index of "
            "the routes only)", "BOOL"),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {setting.name: setting for setting in SETTINGS}
