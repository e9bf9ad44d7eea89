"""How many replies memcached sends to the lines of a request.

memcached (1.6, proto_text.c) splits a command line on spaces only, and is
case-sensitive.  A storage command (``set``, ``add``, ``replace``,
``append``, ``prepend``, ``cas``, meta ``ms``) takes the next line as its
data block of exactly the announced size; when the command line is malformed
memcached answers an error and then reads the data line as a command (two
replies, and whatever that line does), so such requests are refused.  Checked
against memcached 1.6.18 (see tests/test_replies_real_servers.py):

* an empty or blank line is answered ``ERROR``;
* a final ``noreply`` silences delete, incr, decr, touch, flush_all,
  verbosity and cache_memlimit, even their errors, but only when the token
  count suits the command (``delete noreply`` deletes the key ``noreply``;
  too many tokens are answered ``ERROR``);
* a key longer than 250 bytes in a storage command is answered
  ``CLIENT_ERROR`` and its data line is then read as a command;
* a data block must end with CRLF: with a bare LF memcached answers
  ``CLIENT_ERROR bad data chunk`` and reads on out of step, so memcached
  upstreams need the CRLF line delimiter;
* a command line of more than 2048 bytes that is not a ``get``/``gets``
  makes memcached close the connection (when it arrives in more than one
  read);
* ``watch`` turns the connection into a log stream, and ``lru_crawler
  metadump``/``mgdump`` hand it to the crawler, which drops the lines after
  it: neither answers one reply per command;
* meta commands with the ``q`` flag answer nothing on success.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Sequence

from bridge.errors import BodyError
from bridge.upstream.replies.frames import Plan

KEY_MAX = 250
#: Longer command lines are only safe for multi-key gets.
COMMAND_MAX = 2048

_STORAGE = frozenset((b"set", b"add", b"replace", b"append", b"prepend"))
_META_FLAGGED = MappingProxyType({b"mg": 2, b"md": 2, b"ma": 2})  # where flags start
#: Commands that a final ``noreply`` silences: token counts (command included)
#: at which memcached honours it.
_NOREPLY = MappingProxyType({
    b"delete": (3, 4),
    b"incr": (3, 4),
    b"decr": (3, 4),
    b"touch": (3, 4),
    b"flush_all": (2, 3),
    b"verbosity": (2, 3),
    b"cache_memlimit": (2, 3),
})
_LONG_LINES = frozenset((b"get", b"gets"))
_CRAWLER_DUMPS = frozenset((b"metadump", b"mgdump"))
_OTHER_BLANKS = (b"\t", b"\x0b", b"\x0c", b"\r")


def plan_memcached(lines: Sequence[bytes]) -> Plan:
    """The replies memcached sends to ``lines``; BodyError (400) for lines
    it would misread or answer in a way that cannot be matched."""
    answered: list[int] = []
    index = 0
    count = len(lines)
    # memcached splits on spaces only; without other blanks anywhere,
    # bytes.split() (C, on any run of blanks) gives the same tokens, faster.
    text = b"".join(lines)
    plain = not any(blank in text for blank in _OTHER_BLANKS)
    while index < count:
        number = index + 1
        line = lines[index]
        tokens = line.split() if plain else [token for token in line.split(b" ") if token]
        command = tokens[0] if tokens else b""
        index += 1
        if command in _STORAGE or command == b"cas" or command == b"ms":
            if index >= count:
                raise _refused(number, f"is {command.decode()} but no data line follows")
            data = lines[index]
            index += 1
            if command == b"ms":
                replies = _meta_set(number, tokens, data)
            else:
                replies = _storage(number, tokens, data)
        else:
            replies = _command(number, line, command, tokens)
        if replies:
            answered.append(number)
    if len(answered) == count:
        return Plan(count)
    return Plan(len(answered), answered)


def _storage(number: int, tokens: list[bytes], data: bytes) -> int:
    """``<cmd> <key> <flags> <exptime> <bytes> [noreply]`` and
    ``cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]``."""
    command = tokens[0]
    fields = 6 if command == b"cas" else 5
    usage = (
        "cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]"
        if command == b"cas"
        else f"{command.decode()} <key> <flags> <exptime> <bytes> [noreply]"
    )
    well_formed = (
        len(tokens) in (fields, fields + 1)
        and tokens[2].isdigit()
        and _is_integer(tokens[3])
        and tokens[4].isdigit()
        and (command != b"cas" or tokens[5].isdigit())
    )
    if not well_formed:
        raise _refused(
            number,
            f"is not a well-formed storage command ({usage}): memcached would answer an "
            "error and read the data line after it as a command",
        )
    _check_key(number, tokens[1])
    _check_data(number, int(tokens[4]), data)
    return 0 if len(tokens) == fields + 1 and tokens[fields] == b"noreply" else 1


def _meta_set(number: int, tokens: list[bytes], data: bytes) -> int:
    """``ms <key> <datalen> <flags>*``."""
    if len(tokens) < 3 or not tokens[2].isdigit():
        raise _refused(
            number,
            "is not a well-formed meta set (ms <key> <datalen> <flags>*): memcached would "
            "answer an error and read the data line after it as a command",
        )
    _check_key(number, tokens[1])
    _check_quiet(number, tokens, 3)
    _check_data(number, int(tokens[2]), data)
    return 1


def _command(number: int, line: bytes, command: bytes, tokens: list[bytes]) -> int:
    if len(line) > COMMAND_MAX and command not in _LONG_LINES:
        raise _refused(
            number,
            f"is {len(line)} bytes: memcached closes the connection on a command line of "
            f"more than {COMMAND_MAX} bytes unless it is a get or gets",
        )
    flags_at = _META_FLAGGED.get(command)
    if flags_at is not None:
        _check_quiet(number, tokens, flags_at)
        return 1
    if command == b"quit":
        return 0
    if command == b"watch":
        raise _refused(
            number,
            "is watch: it turns the connection into a log stream instead of one reply per "
            "command",
        )
    if command == b"lru_crawler" and len(tokens) > 1 and tokens[1] in _CRAWLER_DUMPS:
        raise _refused(
            number,
            f"is lru_crawler {tokens[1].decode()}: memcached hands the connection to the "
            "crawler and drops the commands that follow it",
        )
    honoured = _NOREPLY.get(command)
    if honoured is not None and tokens[-1] == b"noreply":
        low, high = honoured
        if low <= len(tokens) <= high:
            return 0
    return 1


def _check_key(number: int, key: bytes) -> None:
    if len(key) > KEY_MAX:
        raise _refused(
            number,
            f"has a key of {len(key)} bytes (at most {KEY_MAX}): memcached would answer an "
            "error and read the data line after it as a command",
        )


def _check_data(number: int, size: int, data: bytes) -> None:
    if len(data) != size:
        raise _refused(
            number,
            f"announces {size} bytes of data but line {number + 1} is {len(data)} bytes: "
            "memcached would read past it or stop short, and read the rest as commands",
        )


def _check_quiet(number: int, tokens: list[bytes], flags_at: int) -> None:
    for flag in tokens[flags_at:]:
        if flag.startswith(b"q"):
            raise _refused(
                number,
                f"has the q (quiet) flag: {tokens[0].decode()} then answers nothing on "
                "success, so its replies could not be matched to commands",
            )


def _is_integer(token: bytes) -> bool:
    return token.isdigit() or (token[:1] == b"-" and token[1:].isdigit())


def _refused(number: int, why: str) -> BodyError:
    return BodyError(400, "invalid_command", f"line {number} {why}")

