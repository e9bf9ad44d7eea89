"""The command line's configuration path, in-process (bridge.app.cli).

Only paths that stop before the reactor starts: config errors, --help,
--version and parse_config.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from bridge import __version__
from bridge.app.cli import EXIT_CONFIG, main, parse_config
from bridge.config import SETTINGS, Config, Setting


def shown_default(setting: Setting) -> str:
    """How --help shows a default."""
    if isinstance(setting.default, bool):
        return "true" if setting.default else "false"
    if setting.default in (None, "", ()):
        return "none"
    return str(setting.default)


class CliTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def write_file(self, text: str) -> str:
        directory = tempfile.mkdtemp(prefix="bridge-test-cli-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "bridge.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def assertConfigFailure(self, argv: list[str], environ: dict[str, str], line: str) -> None:
        self.assertEqual(main(argv, environ), EXIT_CONFIG)
        self.assertEqual(self.stderr.getvalue(), f"bridge: error: {line}\n")
        self.assertEqual(self.stdout.getvalue(), "")


class ConfigErrorExitTests(CliTestCase):
    def test_exit_status_is_two(self) -> None:
        self.assertEqual(EXIT_CONFIG, 2)

    def test_negative_backoff_max(self) -> None:
        self.assertConfigFailure(
            ["--backoff-max", "-1"], {},
            "setting 'backoff_max': must be a positive number of seconds, got '-1' "
            "(from --backoff-max)",
        )

    def test_flag_with_equals(self) -> None:
        self.assertConfigFailure(
            ["--pool-size=0"], {},
            "setting 'pool_size': must be at least 1, got '0' (from --pool-size)",
        )

    def test_bad_env_value(self) -> None:
        self.assertConfigFailure(
            [], {"BRIDGE_DELIMITER": "cr"},
            "setting 'delimiter': must be one of crlf, lf; got 'cr' (from BRIDGE_DELIMITER)",
        )

    def test_unknown_file_key(self) -> None:
        path = self.write_file("[bridge]\nupstrem = \"localhost:6379\"\n")
        self.assertConfigFailure(
            ["--config", path], {},
            f"setting 'upstrem': unknown key in {path}; did you mean 'upstream'?",
        )

    def test_misspelt_file_key_suggests_the_closest_key(self) -> None:
        path = self.write_file("reply_timout = 2\n")
        self.assertConfigFailure(
            ["--config", path], {},
            f"setting 'reply_timout': unknown key in {path}; did you mean 'reply_timeout'?",
        )

    def test_config_file_from_environment(self) -> None:
        path = self.write_file("colour = 1\n")
        self.assertConfigFailure(
            [], {"BRIDGE_CONFIG": path}, f"setting 'colour': unknown key in {path}"
        )

    def test_missing_config_file(self) -> None:
        path = os.path.join(os.path.dirname(self.write_file("")), "missing.toml")
        self.assertConfigFailure(
            ["--config", path], {},
            f"setting 'config': cannot read {path}: No such file or directory",
        )

    def test_relation_error(self) -> None:
        self.assertConfigFailure(
            ["--pool-size", "2", "--min-ready", "3"], {},
            "setting 'min_ready': must not exceed pool_size (2), got 3",
        )

    def test_unknown_flag_is_a_usage_error(self) -> None:
        with self.assertRaises(SystemExit) as caught:
            main(["--backof-max", "3"], {})
        self.assertEqual(caught.exception.code, 2)
        self.assertIn("unrecognized arguments: --backof-max 3", self.stderr.getvalue())


class HelpTests(CliTestCase):
    def help_text(self) -> str:
        # A wide terminal so that argparse does not break long words.
        self.patch(os, "environ", {**os.environ, "COLUMNS": "200"})
        with self.assertRaises(SystemExit) as caught:
            main(["--help"], {})
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(self.stderr.getvalue(), "")
        return self.stdout.getvalue()

    def test_every_setting_has_flag_default_and_env(self) -> None:
        text = self.help_text()
        option_lines = [line.strip() for line in text.splitlines()]
        flat = " ".join(text.split())
        for setting in SETTINGS:
            self.assertTrue(
                any(line.startswith(setting.flag + " ") or line.startswith(setting.flag + ",")
                    for line in option_lines),
                setting.flag,
            )
            self.assertIn(f"(default: {shown_default(setting)}; env {setting.env})", flat)

    def test_config_file_option(self) -> None:
        flat = " ".join(self.help_text().split())
        self.assertIn("--config PATH TOML settings file (env BRIDGE_CONFIG)", flat)

    def test_shown_defaults(self) -> None:
        flat = " ".join(self.help_text().split())
        self.assertIn("(default: 30.0; env BRIDGE_BACKOFF_MAX)", flat)
        self.assertIn("(default: 127.0.0.1:8080; env BRIDGE_LISTEN)", flat)
        self.assertIn("(default: none; env BRIDGE_HANDSHAKE)", flat)
        self.assertIn("(default: false; env BRIDGE_ACCESS_LOG)", flat)

    def test_version(self) -> None:
        with self.assertRaises(SystemExit) as caught:
            main(["--version"], {})
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(self.stdout.getvalue(), f"bridge {__version__}\n")


class ParseConfigTests(CliTestCase):
    def test_nothing_gives_the_defaults(self) -> None:
        self.assertEqual(parse_config([], {}), (Config(), False))

    def test_env_used_when_no_flag(self) -> None:
        config, demo = parse_config([], {"BRIDGE_BACKOFF_MAX": "7"})
        self.assertEqual((config.backoff_max, config.sources["backoff_max"], demo),
                         (7.0, "BRIDGE_BACKOFF_MAX", False))

    def test_flag_over_env(self) -> None:
        config, _ = parse_config(["--backoff-max", "9"], {"BRIDGE_BACKOFF_MAX": "7"})
        self.assertEqual((config.backoff_max, config.sources["backoff_max"]),
                         (9.0, "--backoff-max"))

    def test_env_over_file(self) -> None:
        path = self.write_file("backoff_max = 11\nbackoff_initial = 2\n")
        config, _ = parse_config(["--config", path], {"BRIDGE_BACKOFF_MAX": "7"})
        self.assertEqual((config.backoff_max, config.backoff_initial), (7.0, 2.0))

    def test_config_flag_over_config_env(self) -> None:
        good = self.write_file("pool_size = 4\n")
        bad = self.write_file("nonsense = 1\n")
        config, _ = parse_config(["--config", good], {"BRIDGE_CONFIG": bad})
        self.assertEqual(config.pool_size, 4)

    def test_switches(self) -> None:
        config, _ = parse_config(["--discard-send-replies", "--no-access-log"],
                                 {"BRIDGE_ACCESS_LOG": "true"})
        self.assertEqual((config.discard_send_replies, config.access_log), (True, False))

    def test_repeated_handshake_flag(self) -> None:
        config, _ = parse_config(["--handshake", "AUTH x", "--handshake", "SELECT 1"], {})
        self.assertEqual(config.handshake, ("AUTH x", "SELECT 1"))

    def test_demo(self) -> None:
        self.assertEqual(parse_config(["--demo"], {}), (Config(), True))
