"""The validated configuration: a frozen :class:`Config` of plain typed
values, and the rules that involve more than one setting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from bridge import endpoints
from bridge.config.values import ConfigError, GiB, KiB, MiB


@dataclass(frozen=True)
class ScopedToken:
    """A ``[tokens.NAME]`` table: a token allowed only some upstreams and routes."""

    name: str
    token: str = field(repr=False)
    upstreams: frozenset[str] | None = None  # None: every upstream
    routes: frozenset[str] | None = None  # None: send, request and events

    def allows(self, upstream: str, route: str) -> bool:
        return ((self.upstreams is None or upstream in self.upstreams)
                and (self.routes is None or route in self.routes))


@dataclass(frozen=True)
class Config:
    """Validated settings.  Field names match :data:`SETTINGS`.

    One Config describes the bridge: its global settings, and the per-upstream
    settings of the upstream named ``default``.  ``upstreams`` gives each
    upstream's own Config: the same global settings, its own per-upstream
    ones, and its ``name``.
    """

    listen: str = "127.0.0.1:8080"
    upstream: str = "localhost:65432"
    addresses: tuple[str, ...] = ()
    strategy: str = "failover"
    failback_after: float = 30.0
    max_connection_age: float | None = None
    required: bool = True
    delimiter: str = "crlf"
    backoff_initial: float = 1.0
    backoff_factor: float = 1.5
    backoff_max: float = 30.0
    connect_timeout: float = 5.0
    max_line_bytes: int = 64 * KiB
    max_body_bytes: int = MiB
    reply_timeout: float = 5.0
    max_reply_timeout: float = 60.0
    stale_reply_timeout: float | None = None
    reply_error_pattern: str | None = None
    reply_framing: str = "line"
    reply_terminator: str | None = None
    max_reply_bytes: int = 16 * MiB
    fence_line: str | None = None
    fence_expect: str | None = None
    send_replies: str | None = None
    greeting_expect: str | None = None
    events_subscribe: tuple[str, ...] = ()
    max_pending: int = 1000
    discard_send_replies: bool = False
    spool: str = "off"
    spool_dir: str | None = None
    spool_max_bytes: int = GiB
    spool_fsync: str = "always"
    pool_size: int = 1
    min_ready: int = 1
    handshake: tuple[str, ...] = ()
    handshake_expect: str | None = None
    handshake_timeout: float = 5.0
    heartbeat_interval: float | None = None
    heartbeat_line: str | None = "PING"
    heartbeat_expect: str | None = None
    heartbeat_timeout: float = 5.0
    max_event_backlog: int = 1000
    event_stall_timeout: float = 10.0
    event_replay: int = 1000
    event_heartbeat: float = 15.0
    startup_max_attempts: int = 0
    write_high_water: int = MiB
    write_low_water: int = 256 * KiB
    max_inflight: int = 1024
    request_timeout: float = 30.0
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    allow_public: bool = False
    metrics_auth: bool = True
    shutdown_delay: float = 0.0
    shutdown_grace: float = 10.0
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = False
    ui: bool = True
    #: Which upstream this is (the Config of the bridge describes "default").
    name: str = "default"
    #: Whether the upstream named "default" exists (it does unless only named
    #: upstreams are configured).
    default_upstream: bool = True
    #: The upstreams of [upstreams.NAME] tables and --upstream NAME=ADDR flags.
    named_upstreams: Mapping[str, Config] = field(default_factory=dict)
    scoped_tokens: tuple[ScopedToken, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: The TOML file the settings were read from, if any (for the start-up log).
    config_file: str | None = field(default=None, compare=False)

    @property
    def delimiter_bytes(self) -> bytes:
        return b"\r\n" if self.delimiter == "crlf" else b"\n"

    @property
    def upstream_label(self) -> str:
        """The upstream as logs and /status name it: its address, or a group's."""
        if self.addresses:
            return "group " + ", ".join(self.addresses)
        return self.upstream

    @property
    def stale_timeout(self) -> float:
        if self.stale_reply_timeout is not None:
            return self.stale_reply_timeout
        return 3 * self.reply_timeout

    @property
    def send_replies_mode(self) -> str:
        """send_replies, with its per-framing default resolved."""
        if self.send_replies is not None:
            return self.send_replies
        if self.discard_send_replies:
            return "discard"
        return "check" if self.reply_framing in ("resp", "memcached", "status") else "none"

    @property
    def upstreams(self) -> dict[str, Config]:
        """Every upstream by name, ``default`` first when there is one."""
        result: dict[str, Config] = {}
        if self.default_upstream:
            result["default"] = replace(self, name="default", named_upstreams={})
        result.update(self.named_upstreams)
        return result

    @property
    def has_tokens(self) -> bool:
        return self.token is not None or bool(self.scoped_tokens)

    def with_values(self, **values: Any) -> Config:
        """A copy with some values replaced and checked again (for tests, --demo)."""
        return check_bridge(check_upstream(replace(self, **values)))


def check_bridge(config: Config) -> Config:
    """Rules between global settings."""
    if config.token is not None and not config.token.strip():
        raise ConfigError("token", "must not be blank")
    if not config.allow_public and not config.has_tokens and not endpoints.is_loopback_listen(
        config.listen
    ):
        raise ConfigError("listen", f"{config.listen} is not a loopback address and no token is "
                          "set; set a token (BRIDGE_TOKEN) or pass --allow-public")
    return config


def check_upstream(config: Config) -> Config:
    """Rules between one upstream's settings."""
    if config.addresses and config.sources.get("upstream", "default") != "default":
        raise ConfigError("addresses", f"cannot be used together with upstream (set from "
                          f"{config.sources['upstream']}); set one of them")
    if not config.addresses:
        for name in ("strategy", "failback_after"):
            if config.sources.get(name, "default") != "default":
                raise ConfigError(name, "only applies to a group: set addresses too")
    if config.backoff_max < config.backoff_initial:
        raise ConfigError("backoff_max", f"must be at least backoff_initial "
                          f"({config.backoff_initial:g}), got {config.backoff_max:g}")
    if config.max_reply_timeout < config.reply_timeout:
        raise ConfigError("max_reply_timeout", f"must be at least reply_timeout "
                          f"({config.reply_timeout:g}), got {config.max_reply_timeout:g}")
    if config.min_ready > config.pool_size:
        raise ConfigError("min_ready", f"must not exceed pool_size ({config.pool_size}), "
                          f"got {config.min_ready}")
    if config.write_low_water >= config.write_high_water:
        raise ConfigError("write_low_water", f"must be below write_high_water "
                          f"({config.write_high_water}), got {config.write_low_water}")
    if config.heartbeat_line is not None and ("\r" in config.heartbeat_line
                                              or "\n" in config.heartbeat_line):
        # Two lines for one reply slot would put every later reply out of step.
        raise ConfigError("heartbeat_line", "must not contain CR or LF")
    if config.reply_framing == "terminator" and config.reply_terminator is None:
        raise ConfigError("reply_terminator", "must be set when reply_framing is terminator")
    if config.reply_framing != "terminator" and config.reply_terminator is not None:
        raise ConfigError("reply_terminator", "is only used with reply_framing terminator, "
                          f"not {config.reply_framing}")
    if config.reply_framing == "memcached" and config.delimiter != "crlf":
        # memcached reads a data block's end as CRLF only: with LF it answers
        # CLIENT_ERROR bad data chunk and reads the rest out of step.
        raise ConfigError("delimiter", "must be crlf with reply_framing memcached "
                          "(memcached ends data blocks with CRLF only)")
    if (config.fence_line is None) != (config.fence_expect is None):
        missing = "fence_expect" if config.fence_expect is None else "fence_line"
        raise ConfigError(missing, "fence_line and fence_expect must be set together")
    if config.fence_line is not None and ("\r" in config.fence_line
                                          or "\n" in config.fence_line):
        raise ConfigError("fence_line", "must not contain CR or LF")
    if config.fence_expect is not None:
        try:
            re.compile(config.fence_expect.replace("{nonce}", "(?P<nonce>x)", 1)
                       .replace("{nonce}", "(?P=nonce)").encode("utf-8"))
        except re.error as error:
            raise ConfigError("fence_expect", f"is not a valid regular expression: {error}"
                              ) from None
    if (config.discard_send_replies and config.send_replies is not None
            and config.send_replies != "discard"):
        raise ConfigError("discard_send_replies", f"contradicts send_replies = "
                          f"{config.send_replies}; set only send_replies")
    if config.spool == "disk" and not config.spool_dir:
        raise ConfigError("spool_dir", "must be set when spool is disk (one directory per "
                          "upstream)")
    if config.spool_max_bytes < MiB:
        # Segments are at least 64 KiB; a smaller spool could not reclaim space.
        raise ConfigError("spool_max_bytes", f"must be at least 1 MiB ({MiB}), got "
                          f"{config.spool_max_bytes}")
    if config.spool != "disk" and config.spool_dir is not None:
        raise ConfigError("spool_dir", "is only used with spool = disk")
    if config.heartbeat_interval is not None and not config.heartbeat_line:
        raise ConfigError("heartbeat_line", "must not be empty when heartbeat_interval is set")
    return config
