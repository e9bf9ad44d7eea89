"""The README's demo examples, run as written against a real ``bridge --demo``.

A README code block preceded by ``<!-- demo-example -->`` holds shell
commands that need nothing but the demo upstream of ``make run``.  Each
command (``\\`` continues a line) is followed by the answer it prints, as
``# `` comment lines; comment lines before a command are just comments.
The test runs every command with ``bash`` against one ``bridge --demo``
process on an ephemeral port (``127.0.0.1:8080`` in the README stands for
it, and ``BRIDGE_LISTEN`` tells a bare ``bridge healthcheck`` about it), in
README order, and compares what it printed with what the README shows:

* text answers exactly;
* JSON answers as JSON: every key and value as shown, except that ``...``
  in an object stands for keys not shown, and the values of
  :data:`VOLATILE` keys (times, the demo's random port, counters) only need
  the same kind;
* ``NNN {...}`` after a curl command: the HTTP status code, then the body
  (a bare body means a 2xx).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import unittest
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

from tests.bridge_process import REPO, BridgeProcess
from tests.waiting import DEADLINE, wait_until

MARK = "<!-- demo-example -->"
README_ADDRESS = "127.0.0.1:8080"
#: Keys whose values differ from run to run: only their kind is compared.
VOLATILE = frozenset({"uptime", "connected_since", "connected_for", "upstream", "counters"})
_STATUS_PREFIX = re.compile(r"^(\d{3}) (.*)$", re.DOTALL)
_ELISION = re.compile(r"([{,]\s*)\.\.\.(\s*[},])")


class Example(NamedTuple):
    line: int  # in README.md, for failure messages
    command: str
    shown: str


def demo_examples(readme: str) -> Iterator[Example]:
    """Every command of every marked block, with the answer the README shows."""
    lines = readme.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        if not lines[index + 1].startswith("```"):
            raise AssertionError(f"README.md:{index + 1}: {MARK} is not right before a code block")
        position = index + 2
        command: list[str] = []
        shown: list[str] = []
        start = position
        while not lines[position].startswith("```"):
            text = lines[position]
            if command and command[-1].endswith("\\"):
                command.append(text)
            elif text.startswith("#") and command:
                shown.append(text[2:] if text.startswith("# ") else text[1:])
            elif text.startswith("#") or not text.strip():
                if command:
                    yield Example(start + 1, "\n".join(command), "\n".join(shown))
                    command, shown = [], []
            else:
                if command:
                    yield Example(start + 1, "\n".join(command), "\n".join(shown))
                command, shown, start = [text], [], position
            position += 1
        if command:
            yield Example(start + 1, "\n".join(command), "\n".join(shown))


def parse_shown_json(text: str) -> Any:
    """The README's JSON, with ``...`` in an object as the key ``"..."``."""
    return json.loads(_ELISION.sub(r'\1"...": null\2', text))


def same_kind(shown: Any, real: Any) -> bool:
    numbers = (int, float)
    if isinstance(shown, bool) or isinstance(real, bool):
        return type(shown) is type(real)
    if isinstance(shown, numbers) and isinstance(real, numbers):
        return True
    if isinstance(shown, dict) and isinstance(real, dict):
        keys = set(shown) - {"..."}
        return keys == set(real) or ("..." in shown and keys <= set(real))
    return type(shown) is type(real)


def json_differences(shown: Any, real: Any, path: str = "") -> list[str]:
    """Where ``real`` differs from what the README shows (empty: it matches)."""
    if isinstance(shown, dict) and isinstance(real, dict):
        keys = set(shown) - {"..."}
        problems = [f"{path}.{key}: shown but not in the answer" for key in keys - set(real)]
        if "..." not in shown:
            problems += [f"{path}.{key}: in the answer but not shown" for key in set(real) - keys]
        for key in sorted(keys & set(real)):
            if key in VOLATILE:
                if not same_kind(shown[key], real[key]):
                    problems.append(f"{path}.{key}: shown {shown[key]!r}, got {real[key]!r}")
            else:
                problems += json_differences(shown[key], real[key], f"{path}.{key}")
        return problems
    if isinstance(shown, list) and isinstance(real, list) and len(shown) == len(real):
        return [problem for index, (a, b) in enumerate(zip(shown, real, strict=True))
                for problem in json_differences(a, b, f"{path}[{index}]")]
    if shown != real or type(shown) is not type(real):
        return [f"{path or 'the answer'}: shown {shown!r}, got {real!r}"]
    return []


class ParserTests(unittest.TestCase):
    """The runner's own rules, so that a README mistake cannot pass unseen."""

    def test_blocks_commands_and_answers(self) -> None:
        readme = "\n".join([
            "text", MARK, "```sh", "# a comment", "curl a \\", "  b", "# {\"x\": 1}",
            "# more", "", "echo c", "# c", "```", "```sh", "curl unmarked", "```",
        ])
        self.assertEqual(list(demo_examples(readme)), [
            Example(5, "curl a \\\n  b", '{"x": 1}\nmore'), Example(10, "echo c", "c"),
        ])

    def test_elision_and_volatile_values(self) -> None:
        shown = parse_shown_json('{"a": 1, "uptime": 0.5, ...}')
        self.assertEqual(json_differences(shown, {"a": 1, "uptime": 7, "b": 2}), [])
        self.assertEqual(json_differences(shown, {"a": 2, "uptime": 7}), [".a: shown 1, got 2"])
        self.assertEqual(json_differences({"a": 1}, {"a": 1, "b": 2}),
                         [".b: in the answer but not shown"])
        self.assertEqual(json_differences({"uptime": 1.0}, {"uptime": "1"}),
                         [".uptime: shown 1.0, got '1'"])
        self.assertEqual(json_differences({"a": True}, {"a": 1}), [".a: shown True, got 1"])


class ReadmeDemoExamplesTests(unittest.TestCase):
    bridge: ClassVar[BridgeProcess]
    port: ClassVar[int]

    @classmethod
    def setUpClass(cls) -> None:
        if shutil.which("curl") is None or shutil.which("bash") is None:
            raise unittest.SkipTest("the README's examples need curl and bash, not found on PATH")
        cls.bridge = BridgeProcess.bridge("--demo", "--listen", "127.0.0.1:0")
        try:
            cls.bridge.block_until_listening()
            assert cls.bridge.port is not None
            cls.port = cls.bridge.port
            wait_until(lambda: '"ready": true' in cls.run_command(
                f"curl http://{README_ADDRESS}/readyz").stdout, "the demo upstream to connect")
        except BaseException:
            cls.bridge.stop_now()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.bridge.stop_now()

    @classmethod
    def run_command(cls, command: str) -> subprocess.CompletedProcess[str]:
        """``command`` as bash runs it, aimed at the test's bridge; a curl
        command also prints the status code on a last line of its own."""
        command = command.replace(README_ADDRESS, f"127.0.0.1:{cls.port}")
        command = command.replace(".venv/bin/", os.path.dirname(sys.executable) + "/")
        if command.startswith("curl "):
            command = "curl -s -w '\\n%{http_code}' " + command[len("curl "):]
        env = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
        env["BRIDGE_LISTEN"] = f"127.0.0.1:{cls.port}"
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                timeout=DEADLINE, env=env, cwd=REPO)
        result.stdout = result.stdout.replace(f"127.0.0.1:{cls.port}", README_ADDRESS)
        return result

    def test_every_demo_example_answers_as_shown(self) -> None:
        with open(REPO / "README.md", encoding="utf-8") as handle:
            examples = list(demo_examples(handle.read()))
        self.assertGreaterEqual(len(examples), 10, "the README lost its demo examples")
        for example in examples:
            with self.subTest(line=example.line, command=example.command):
                self.check(example)

    def check(self, example: Example) -> None:
        result = self.run_command(example.command)
        where = f"README.md:{example.line}: {example.command}\n--- printed:\n{result.stdout}"
        self.assertEqual(result.stderr, "", where)
        self.assertTrue(example.shown, f"{where}\nthe README shows no answer")
        output, shown = result.stdout, example.shown
        if example.command.startswith("curl "):
            output, _, code = output.rpartition("\n")
            prefix = _STATUS_PREFIX.match(shown)
            if prefix and prefix.group(2).lstrip().startswith(("{", "[")):
                self.assertEqual(code, prefix.group(1), where)
                shown = prefix.group(2)
            else:
                self.assertRegex(code, r"^2\d\d$", where)
        if shown.lstrip().startswith(("{", "[")):
            problems = json_differences(parse_shown_json(shown), json.loads(output))
            self.assertEqual(problems, [], where)
        else:
            self.assertEqual(output.rstrip("\n"), shown, where)
