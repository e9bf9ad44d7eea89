"""Where settings come from: flags, ``BRIDGE_*`` variables, the TOML file,
defaults, merged once at the edge.

Precedence, highest first: command-line flag, environment variable
``BRIDGE_<NAME>``, TOML file (``--config``), built-in default.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import fields
from typing import Any, Mapping

from bridge.config.model import Config, _check_relations
from bridge.config.settings import SETTINGS, SETTINGS_BY_NAME
from bridge.config.values import ConfigError


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
