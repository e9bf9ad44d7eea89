"""Setting values: the converters that turn a flag, an environment variable
or a TOML value into a typed value, and the error users see."""

from __future__ import annotations

import math
import re
from typing import Callable

from bridge import endpoints

MiB = 1024 * 1024
GiB = 1024 * MiB
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
