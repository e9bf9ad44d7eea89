"""Where settings come from: flags, ``BRIDGE_*`` variables, the TOML file,
defaults, merged once at the edge.

Precedence, highest first: command-line flag, environment variable
``BRIDGE_<NAME>``, TOML file (``--config``), built-in default.  Those sources
describe the global settings and the upstream named ``default``; each
``[upstreams.NAME]`` table of the file, and each ``--upstream NAME=ADDR``
flag, adds a named upstream whose settings start from the built-in defaults.
``[tokens.NAME]`` tables add tokens limited to some upstreams and routes.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from bridge.config.model import Config, ScopedToken, check_bridge, check_upstream
from bridge.config.settings import SETTINGS, SETTINGS_BY_NAME, Setting
from bridge.config.values import ConfigError

#: What an upstream's or a token's NAME may be: it appears in routes (/u/NAME/).
NAME = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT = "default"
ROUTES = frozenset({"send", "request", "events"})
_TOKEN_KEYS = ("token", "token_file", "upstreams", "routes")


@dataclass
class ConfigFile:
    """A TOML settings file, checked for unknown keys."""

    path: str
    settings: dict[str, object] = field(default_factory=dict)
    upstreams: dict[str, dict[str, object]] = field(default_factory=dict)
    tokens: dict[str, dict[str, object]] = field(default_factory=dict)


def _read_token(path: str, setting: str = "token_file") -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(setting, f"cannot read {path}: {reason}") from None
    if not token:
        raise ConfigError(setting, f"{path} is empty")
    return token


def _unknown(key: str, known: Any, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(key, f"unknown key in {where}{hint}")


def _tables(path: str, value: object, kind: str) -> dict[str, dict[str, object]]:
    if not isinstance(value, dict):
        raise ConfigError(kind, f"{path}: {kind} must be tables, such as [{kind}.NAME]")
    tables: dict[str, dict[str, object]] = {}
    for name, table in value.items():
        if not NAME.fullmatch(name):
            raise ConfigError(f"{kind}.{name}", "a name is letters, digits, '-' and '_' only")
        if not isinstance(table, dict):
            raise ConfigError(f"{kind}.{name}", f"{path}: must be a table")
        tables[name] = dict(table)
    return tables


def read_config_file(path: str) -> ConfigFile:
    """Read a config file; every problem is a ConfigError naming the key."""
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
    result = ConfigFile(path)
    for key, value in section.items():
        if key == "upstreams":
            result.upstreams = _tables(path, value, "upstreams")
        elif key == "tokens":
            result.tokens = _tables(path, value, "tokens")
        elif key in SETTINGS_BY_NAME:
            result.settings[key] = value
        else:
            raise _unknown(key, [*SETTINGS_BY_NAME, "upstreams", "tokens"], path)
    for name, table in result.upstreams.items():
        for key in table:
            setting = SETTINGS_BY_NAME.get(key)
            if setting is None:
                where = f"{path} [upstreams.{name}]"
                raise _unknown(key, [s.name for s in SETTINGS if s.per_upstream], where)
            if not setting.per_upstream:
                raise ConfigError(key, f"is a setting of the whole bridge, not of one upstream: "
                                  f"set it at the top level of {path}, not in [upstreams.{name}]")
    for name, table in result.tokens.items():
        for key in table:
            if key not in _TOKEN_KEYS:
                raise _unknown(key, _TOKEN_KEYS, f"{path} [tokens.{name}]")
    return result


def read_toml(path: str) -> dict[str, object]:
    """The top-level settings of a config file (its tables checked too)."""
    return dict(read_config_file(path).settings)


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


def _convert(setting: Setting, raw: object, source: str) -> Any:
    try:
        return setting.convert(raw)
    except ValueError as error:
        if setting.name == "token":  # never echo what may be a secret
            raise ConfigError("token", f"must be text (from {source})") from None
        raise ConfigError(setting.name, f"{error} (from {source})") from None


def split_upstream_flags(given: object) -> tuple[str | None, list[tuple[str, str]]]:
    """``--upstream`` values: the plain address (at most one) and NAME=ADDR pairs.

    An endpoint string may hold ``=`` too (``tls:host:6380:trustRoots=...``):
    only a leading name of letters, digits, ``-`` and ``_`` makes a pair.
    """
    values = [given] if isinstance(given, str) else list(given)  # type: ignore[call-overload]
    plain: list[str] = []
    named: list[tuple[str, str]] = []
    for value in values:
        text = str(value)
        name, equals, address = text.partition("=")
        if equals and NAME.fullmatch(name):
            if any(existing == name for existing, _ in named):
                raise ConfigError("upstream", f"--upstream {name}=... is given twice; each "
                                  "upstream needs its own name")
            named.append((name, address))
        else:
            plain.append(text)
    if len(plain) > 1:
        raise ConfigError("upstream", f"--upstream is given twice ({plain[0]} and {plain[1]}); "
                          "give several upstreams names: --upstream NAME=ADDR")
    return (plain[0] if plain else None), named


def load(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    config_path: str | None = None,
) -> Config:
    """Merge the sources and validate every value.

    ``flags`` holds only the options given on the command line.
    """
    file = read_config_file(config_path) if config_path else ConfigFile("")
    flags = dict(flags)
    plain, named_flags = split_upstream_flags(flags.pop("upstream", []))
    if plain is not None:
        flags["upstream"] = plain
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in flags:
            raw, source = flags[setting.name], setting.flag
        elif setting.env in environ:
            raw, source = environ[setting.env], setting.env
        elif setting.name in file.settings:
            raw, source = file.settings[setting.name], file.path
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
            continue
        values[setting.name] = _convert(setting, raw, source)
        sources[setting.name] = source
    if values.get("token_file") and values.get("token") is None:
        values["token"] = _read_token(values["token_file"])
    known = {f.name for f in fields(Config)}
    bridge = Config(**{k: v for k, v in values.items() if k in known}, sources=sources,
                    config_file=config_path)

    named = _named_upstreams(bridge, file, named_flags)
    given_here = [s.name for s in SETTINGS if s.per_upstream and sources[s.name] != "default"]
    if DEFAULT in named and given_here:
        raise ConfigError(given_here[0], "is set at the top level, which describes the "
                          "upstream named default, and [upstreams.default] describes it too")
    has_default = DEFAULT not in named and (sources["upstream"] != "default" or not named)
    if not has_default and DEFAULT not in named and given_here:
        raise ConfigError(given_here[0], "applies to the upstream named default, which is not "
                          "configured: give --upstream ADDR (or upstream = ...), or set it in "
                          "an [upstreams.NAME] table")
    if has_default:
        check_upstream(bridge)
    bridge = replace(bridge, default_upstream=has_default, named_upstreams=named)
    _distinct_spool_dirs(bridge)
    bridge = replace(bridge, scoped_tokens=_scoped_tokens(file, bridge))
    return check_bridge(bridge)


def _named_upstreams(
    bridge: Config, file: ConfigFile, flags: list[tuple[str, str]]
) -> dict[str, Config]:
    """The named upstreams, in file order then flag order."""
    base = replace(bridge, **{s.name: s.default for s in SETTINGS if s.per_upstream},
                   sources={}, default_upstream=False, named_upstreams={})
    entries: list[tuple[str, dict[str, object], str]] = [
        (name, table, f"{file.path} [upstreams.{name}]") for name, table in file.upstreams.items()
    ]
    for name, address in flags:
        if name in file.upstreams:
            raise ConfigError("upstream", f"the upstream {name!r} is defined twice: by "
                              f"--upstream {name}=... and by [upstreams.{name}] in {file.path}")
        entries.append((name, {"upstream": address}, f"--upstream {name}=..."))
    result: dict[str, Config] = {}
    for name, table, where in entries:
        if "upstream" not in table and "addresses" not in table:
            raise ConfigError(f"upstreams.{name}", f"{where} needs an upstream address")
        values = {key: _convert(SETTINGS_BY_NAME[key], raw, where) for key, raw in table.items()}
        sources = {s.name: "default" if s.per_upstream else bridge.sources.get(s.name, "default")
                   for s in SETTINGS}
        sources.update({key: where for key in table})
        config = replace(base, name=name, sources=sources, **values)
        try:
            result[name] = check_upstream(config)
        except ConfigError as error:
            raise ConfigError(f"upstreams.{name}.{error.setting}", error.problem) from None
    return result


def _distinct_spool_dirs(bridge: Config) -> None:
    """Each spooling upstream needs its own directory (a spool has one reader)."""
    seen: dict[str, str] = {}
    for name, upstream in bridge.upstreams.items():
        if upstream.spool != "disk" or upstream.spool_dir is None:
            continue
        where = os.path.realpath(upstream.spool_dir)
        if where in seen:
            setting = "spool_dir" if name == DEFAULT else f"upstreams.{name}.spool_dir"
            raise ConfigError(setting, f"{upstream.spool_dir} is also the spool_dir of the "
                              f"upstream {seen[where]!r}; each upstream needs its own")
        seen[where] = name


def _scoped_tokens(file: ConfigFile, bridge: Config) -> tuple[ScopedToken, ...]:
    upstreams = set(bridge.upstreams)
    tokens: list[ScopedToken] = []
    seen = {bridge.token} if bridge.token else set()
    for name, table in file.tokens.items():
        where = f"tokens.{name}"
        if ("token" in table) == ("token_file" in table):
            raise ConfigError(where, "needs exactly one of token and token_file")
        if "token" in table:
            value = table["token"]
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}.token", "must be non-empty text")
            token = value.strip()
        else:
            path = table["token_file"]
            if not isinstance(path, str):
                raise ConfigError(f"{where}.token_file", "must be a path")
            token = _read_token(path, f"{where}.token_file")
        if token in seen:
            raise ConfigError(f"{where}.token", "is the same as another token; each token "
                              "needs its own value so that its scope is clear")
        seen.add(token)
        allowed_upstreams = _name_list(table, "upstreams", where, upstreams)
        allowed_routes = _name_list(table, "routes", where, ROUTES)
        tokens.append(ScopedToken(name, token, allowed_upstreams, allowed_routes))
    return tuple(tokens)


def _name_list(
    table: Mapping[str, object], key: str, where: str, known: set[str] | frozenset[str]
) -> frozenset[str] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}.{key}", "must be a list of names")
    for item in value:
        if item not in known:
            raise ConfigError(f"{where}.{key}", f"{item!r} is not one of "
                              f"{', '.join(sorted(known))}")
    return frozenset(value)
