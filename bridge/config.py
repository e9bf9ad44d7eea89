"""Settings: one table, four sources, validated once at the edge.

Precedence, highest first: command-line flag, environment variable
``BRIDGE_<NAME>``, TOML file (``--config``), built-in default.  Everything
past this module receives a frozen :class:`Config` of plain typed values.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping, Sequence

from bridge import endpoints

MiB = 1024 * 1024
KiB = 1024


class ConfigError(Exception):
    """A setting has a bad value.  ``str()`` is the one line users see."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"setting {setting!r}: {problem}")
        self.setting = setting
        self.problem = problem


# -- value converters: each accepts a string (flag, env) or a TOML value ------


def _text(value: object) -> str:
    if isinstance(value, (bool, int, float)) and not isinstance(value, str):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    # Non-UTF-8 bytes in the environment arrive as lone surrogates; they would
    # fail later (a traceback at startup) where the value is encoded.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8 text") from None
    return value


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(_text(value).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def seconds(value: object) -> float:
    """A positive duration in seconds."""
    number = _number(value)
    if number <= 0:
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return number


def seconds_or_zero(value: object) -> float:
    """A duration in seconds that may be 0."""
    number = _number(value)
    if number < 0:
        raise ValueError(f"must be zero or a positive number of seconds, got {value!r}")
    return number


def optional_seconds(value: object) -> float | None:
    """A positive duration, or empty/0 for "off"."""
    if value is None or value == "" or value == 0 or value == "0":
        return None
    return seconds(value)


def _integer(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(_text(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def positive_int(value: object) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return number


def non_negative_int(value: object) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {value!r}")
    return number


def factor(value: object) -> float:
    number = _number(value)
    if number < 1:
        raise ValueError(f"must be 1 or more, got {value!r}")
    return number


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def choice(*options: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = _text(value).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return text

    return convert


def regex(value: object) -> str | None:
    text = _text(value)
    if text == "":
        return None
    try:
        re.compile(text.encode("utf-8"))
    except re.error as error:
        raise ValueError(f"is not a valid regular expression: {error}") from None
    return text


def optional_text(value: object) -> str | None:
    text = _text(value)
    return text or None


def line_list(value: object) -> tuple[str, ...]:
    """Lines to send: a TOML array, or newline-separated text."""
    if isinstance(value, (list, tuple)):
        items = [_text(item) for item in value]
    else:
        text = _text(value)
        # As in request bodies, one final LF ends the last line (YAML "|" adds one).
        items = text.removesuffix("\n").split("\n") if text else []
    for item in items:
        if "\r" in item or "\n" in item:
            raise ValueError("a line may not contain CR or LF")
    return tuple(items)


def listen_address(value: object) -> str:
    text = _text(value).strip()
    try:
        endpoints.validate_server(text)
    except endpoints.AddressError as error:
        raise ValueError(str(error)) from None
    return text


def upstream_address(value: object) -> str:
    text = _text(value).strip()
    try:
        return endpoints.validate_client(text)
    except endpoints.AddressError as error:
        raise ValueError(str(error)) from None


def address_list(value: object) -> tuple[str, ...]:
    """Upstream addresses of a group: a TOML array, or newline-separated text
    (the environment); each one checked like ``upstream``."""
    if isinstance(value, (list, tuple)):
        items = [_text(item) for item in value]
    else:
        items = _text(value).split("\n")
    addresses = []
    for number, item in enumerate(items, 1):
        if not item.strip():
            if isinstance(value, (list, tuple)):
                raise ValueError(f"address {number} is empty")
            continue  # blank lines of the environment form
        try:
            addresses.append(upstream_address(item))
        except ValueError as error:
            raise ValueError(f"address {number}: {error}") from None
    if len(set(addresses)) != len(addresses):
        twice = next(item for item in addresses if addresses.count(item) > 1)
        raise ValueError(f"{twice} is listed twice")
    return tuple(addresses)


# -- the settings table -------------------------------------------------------


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
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "BRIDGE_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("listen", "127.0.0.1:8080", listen_address,
            "HTTP address: HOST:PORT or a server endpoint string (tcp:, unix:, ssl:)",
            "ADDR"),
    Setting("upstream", "localhost:65432", upstream_address,
            "upstream line server: HOST:PORT or a client endpoint string (tcp:, tls:, unix:)",
            "ADDR"),
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
    Setting("delimiter", "crlf", choice("crlf", "lf"),
            "line ending written to the upstream (crlf or lf); both are accepted when reading",
            "crlf|lf"),
    Setting("backoff_initial", 1.0, seconds, "first reconnect delay, seconds", "SECONDS"),
    Setting("backoff_factor", 2.0, factor, "reconnect delay multiplier per failed attempt",
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
            "bearer token required on every route but /healthz and /readyz (never logged)",
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
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Config:
    """Validated settings.  Field names match :data:`SETTINGS`."""

    listen: str = "127.0.0.1:8080"
    upstream: str = "localhost:65432"
    addresses: tuple[str, ...] = ()
    strategy: str = "failover"
    failback_after: float = 30.0
    max_connection_age: float | None = None
    delimiter: str = "crlf"
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
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

    def with_values(self, **values: Any) -> Config:
        """A copy with some values replaced and checked again (for tests, --demo)."""
        return _check_relations(replace(self, **values))


def _check_relations(config: Config) -> Config:
    """Rules that involve more than one setting."""
    if config.addresses and config.sources.get("upstream", "default") != "default":
        raise ConfigError("addresses", f"cannot be used together with upstream (set from "
                          f"{config.sources['upstream']}); set one of them")
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
    if config.token is not None and not config.token.strip():
        raise ConfigError("token", "must not be blank")
    if not config.allow_public and config.token is None and not endpoints.is_loopback_listen(
        config.listen
    ):
        raise ConfigError("listen", f"{config.listen} is not a loopback address and no token is "
                          "set; set a token (BRIDGE_TOKEN) or pass --allow-public")
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
    if config.heartbeat_interval is not None and not config.heartbeat_line:
        raise ConfigError("heartbeat_line", "must not be empty when heartbeat_interval is set")
    return config


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError("token_file", f"cannot read {path}: {reason}") from None
    if not token:
        raise ConfigError("token_file", f"{path} is empty")
    return token


def read_toml(path: str) -> dict[str, object]:
    """Read a config file; every problem is a ConfigError naming ``config``."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path} is not valid TOML: {error}") from None
    section = data.get("bridge", data) if set(data) == {"bridge"} else data
    if not isinstance(section, dict):
        raise ConfigError("config", f"{path}: [bridge] must be a table")
    for key in section:
        if key not in SETTINGS_BY_NAME:
            close = difflib.get_close_matches(key, SETTINGS_BY_NAME, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(key, f"unknown key in {path}{hint}")
    return dict(section)


#: BRIDGE_* variables that are not settings but are read elsewhere.
OTHER_VARIABLES = frozenset({"BRIDGE_CONFIG", "BRIDGE_HEALTHCHECK_URL", "BRIDGE_CONTAINER_TEST"})


def misspelt_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per BRIDGE_* variable that looks like a misspelt setting.

    A warning, not an error, and only for near misses: other software sets
    BRIDGE_* variables too (Kubernetes adds BRIDGE_SERVICE_HOST, BRIDGE_PORT...
    to every pod when a Service is named "bridge"), and those must neither
    stop the bridge nor fill its log.
    """
    known = {setting.env: setting for setting in SETTINGS}
    warnings = []
    for name in sorted(environ):
        if not name.startswith("BRIDGE_") or name in known or name in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            warnings.append(f"environment variable {name} is not a setting and is ignored; "
                            f"did you mean {close[0]}?")
    return warnings


def load(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    config_path: str | None = None,
) -> Config:
    """Merge the four sources and validate every value.

    ``flags`` holds only the options given on the command line.
    """
    file_values: dict[str, object] = read_toml(config_path) if config_path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in flags:
            raw, source = flags[setting.name], setting.flag
        elif setting.env in environ:
            raw, source = environ[setting.env], setting.env
        elif setting.name in file_values:
            raw, source = file_values[setting.name], f"{config_path}"
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
            continue
        try:
            values[setting.name] = setting.convert(raw)
        except ValueError as error:
            raise ConfigError(setting.name, f"{error} (from {source})") from None
        sources[setting.name] = source
    if values.get("token_file") and values.get("token") is None:
        values["token"] = _read_token(values["token_file"])
    known = {f.name for f in fields(Config)}
    return _check_relations(
        Config(**{k: v for k, v in values.items() if k in known}, sources=sources,
               config_file=config_path)
    )


def describe(settings: Sequence[Setting] = SETTINGS) -> list[tuple[str, str, str, str, str]]:
    """Rows of (flag, env, file key, default, help) for --help and the README."""
    rows = []
    for setting in settings:
        default = setting.default
        shown = "(none)" if default in (None, "", ()) else str(default)
        rows.append((setting.flag, setting.env, setting.name, shown, setting.help))
    return rows
