"""The documentation lists what the program really has."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib

from twisted.trial.unittest import SynchronousTestCase

from bridge.config import SETTINGS, SETTINGS_BY_NAME, load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return handle.read()


def settings_table() -> str:
    """The README's settings table, as the code defines it."""
    rows = ["| Flag | Environment | File key | Default | Scope | Meaning |",
            "|---|---|---|---|---|---|"]
    for setting in SETTINGS:
        default = setting.default
        if default in (None, "", ()):
            shown = "(none)"
        elif isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            shown = str(default)
        flag = setting.flag
        if setting.flag_kind == "switch" or isinstance(default, bool):
            flag += " / --no-" + setting.flag[2:]
        meaning = setting.help.replace("|", "\\|")
        scope = "upstream" if setting.per_upstream else "bridge"
        rows.append(f"| `{flag}` | `{setting.env}` | `{setting.name}` | `{shown}` | {scope} "
                    f"| {meaning} |")
    return "\n".join(rows) + "\n"


class ReadmeTests(SynchronousTestCase):
    def test_settings_table_is_generated_from_the_code(self) -> None:
        readme = read("README.md")
        table = settings_table()
        self.assertIn(table, readme, "the README's settings table is out of date; it should "
                      "read:\n" + table)

    def test_settings_table_lists_every_setting_with_its_default(self) -> None:
        readme = read("README.md")
        for setting in SETTINGS:
            default = setting.default
            if default in (None, "", ()):
                shown = "(none)"
            elif isinstance(default, bool):
                shown = "true" if default else "false"
            else:
                shown = str(default)
            row = re.search(rf"^\| `{re.escape(setting.flag)}[^|]*\| `{setting.env}` \| "
                            rf"`{setting.name}` \| `([^`]*)` \|", readme, re.MULTILINE)
            self.assertIsNotNone(row, f"README has no row for {setting.name}")
            assert row is not None
            self.assertEqual(row.group(1), shown, setting.name)

    def test_the_two_commands_come_first(self) -> None:
        readme = read("README.md")
        quick = readme.index("## Quick start")
        self.assertLess(quick, readme.index("## The HTTP API"))
        self.assertIn("make run", readme[quick:quick + 600])
        self.assertIn("make test", readme[quick:quick + 600])


class SampleConfigTests(SynchronousTestCase):
    def test_sample_file_names_every_setting_and_loads_to_the_defaults(self) -> None:
        sample = read("config", "bridge.toml")
        for setting in SETTINGS:
            self.assertRegex(sample, rf"(?m)^#? ?{setting.name} = ", setting.name)
        config = load({}, {}, os.path.join(ROOT, "config", "bridge.toml"))
        defaults = load({}, {})
        self.assertEqual(config, defaults)

    def test_every_commented_key_is_valid_toml_when_uncommented(self) -> None:
        sample = read("config", "bridge.toml")
        commented = re.compile(r"(?m)^# ([a-z_]+) = (.*)$")
        examples = dict(commented.findall(sample))
        self.assertEqual(set(examples) - set(SETTINGS_BY_NAME), set(), "not settings")
        self.assertIn("stale_reply_timeout", examples)
        uncommented = commented.sub(r"\1 = \2", sample)
        # reply_terminator is only taken with the terminator framing.
        uncommented = uncommented.replace('reply_framing = "line"', 'reply_framing = "terminator"')
        # addresses replaces upstream (both set is an error).
        uncommented = re.sub(r'(?m)^upstream = .*$', '', uncommented)
        # Each line on its own: a bad one is named.
        for key, value in examples.items():
            with self.subTest(key=key):
                tomllib.loads(f"{key} = {value}")
        parsed = tomllib.loads(uncommented)
        with tempfile.NamedTemporaryFile("w", suffix=".toml", encoding="utf-8") as handle:
            handle.write(uncommented)
            handle.flush()
            config = load({}, {}, handle.name)
        for key in examples:
            self.assertEqual(config.sources[key], handle.name, key)
            self.assertIsNotNone(getattr(config, key), key)
        self.assertEqual(config.stale_reply_timeout, parsed["stale_reply_timeout"])
        self.assertEqual(config.handshake_expect, r"^\+OK")
