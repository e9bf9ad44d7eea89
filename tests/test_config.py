"""Settings from flags, environment, TOML file and defaults (bridge.config)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import MISSING, fields
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bridge.config import (
    SETTINGS,
    SETTINGS_BY_NAME,
    Config,
    ConfigError,
    load,
    misspelt_variables,
    read_toml,
)

SAMPLE_FILE = Path(__file__).resolve().parent.parent / "config" / "bridge.toml"


class ConfigTestCase(SynchronousTestCase):
    def write_file(self, text: str) -> str:
        directory = tempfile.mkdtemp(prefix="bridge-test-config-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "bridge.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def assertConfigError(
        self,
        setting: str,
        flags: dict[str, object] | None = None,
        environ: dict[str, str] | None = None,
        path: str | None = None,
    ) -> ConfigError:
        with self.assertRaises(ConfigError) as caught:
            load(flags or {}, environ or {}, path)
        self.assertEqual(caught.exception.setting, setting, str(caught.exception))
        self.assertEqual(
            str(caught.exception), f"setting {setting!r}: {caught.exception.problem}"
        )
        return caught.exception


class DefaultsTests(SynchronousTestCase):
    def test_documented_defaults(self) -> None:
        config = load({}, {})
        documented = {
            "listen": "127.0.0.1:8080",
            "upstream": "localhost:65432",
            "delimiter": "crlf",
            "backoff_initial": 1.0,
            "backoff_factor": 1.5,
            "backoff_max": 30.0,
            "connect_timeout": 5.0,
            "max_line_bytes": 65536,
            "max_body_bytes": 1048576,
            "reply_timeout": 5.0,
            "max_reply_timeout": 60.0,
            "stale_reply_timeout": None,
            "reply_error_pattern": None,
            "max_pending": 1000,
            "discard_send_replies": False,
            "pool_size": 1,
            "min_ready": 1,
            "handshake": (),
            "handshake_expect": None,
            "handshake_timeout": 5.0,
            "heartbeat_interval": None,
            "heartbeat_line": "PING",
            "heartbeat_expect": None,
            "heartbeat_timeout": 5.0,
            "max_event_backlog": 1000,
            "event_stall_timeout": 10.0,
            "event_replay": 1000,
            "event_heartbeat": 15.0,
            "startup_max_attempts": 0,
            "log_level": "info",
            "log_format": "text",
            "access_log": False,
        }
        actual = {name: getattr(config, name) for name in documented}
        self.assertEqual(actual, documented)
        self.assertEqual(config.delimiter_bytes, b"\r\n")
        self.assertEqual(config.stale_timeout, 15.0)

    def test_setting_defaults_equal_config_field_defaults(self) -> None:
        config_fields = {
            f.name: f for f in fields(Config)
            if f.name not in ("sources", "config_file", "name", "default_upstream",
                              "named_upstreams", "scoped_tokens")
        }
        self.assertEqual(sorted(config_fields), sorted(SETTINGS_BY_NAME))
        for setting in SETTINGS:
            default = config_fields[setting.name].default
            self.assertIsNot(default, MISSING, setting.name)
            self.assertEqual(
                (type(setting.default), setting.default), (type(default), default), setting.name
            )

    def test_setting_names_are_unique(self) -> None:
        self.assertEqual(len(SETTINGS_BY_NAME), len(SETTINGS))

    def test_load_with_nothing_gives_the_defaults(self) -> None:
        config = load({}, {})
        self.assertEqual(config, Config())
        self.assertEqual(dict(config.sources), {s.name: "default" for s in SETTINGS})

    def test_sample_file_shows_the_defaults(self) -> None:
        self.assertEqual(load({}, {}, str(SAMPLE_FILE)), Config())

    def test_flag_and_env_names(self) -> None:
        setting = SETTINGS_BY_NAME["backoff_max"]
        self.assertEqual((setting.flag, setting.env), ("--backoff-max", "BRIDGE_BACKOFF_MAX"))


class PrecedenceTests(ConfigTestCase):
    def test_flag_over_env_over_file_over_default(self) -> None:
        path = self.write_file(
            "backoff_max = 20\nconnect_timeout = 7\nreply_timeout = 3\n"
        )
        config = load(
            {"backoff_max": "28"},
            {"BRIDGE_BACKOFF_MAX": "25", "BRIDGE_CONNECT_TIMEOUT": "8"},
            path,
        )
        self.assertEqual(
            (config.backoff_max, config.connect_timeout, config.reply_timeout,
             config.backoff_initial),
            (28.0, 8.0, 3.0, 1.0),
        )
        self.assertEqual(
            (config.sources["backoff_max"], config.sources["connect_timeout"],
             config.sources["reply_timeout"], config.sources["backoff_initial"]),
            ("--backoff-max", "BRIDGE_CONNECT_TIMEOUT", path, "default"),
        )

    def test_env_over_file(self) -> None:
        path = self.write_file('delimiter = "crlf"\n')
        config = load({}, {"BRIDGE_DELIMITER": "lf"}, path)
        self.assertEqual((config.delimiter, config.delimiter_bytes), ("lf", b"\n"))

    def test_env_strings_are_converted(self) -> None:
        config = load({}, {
            "BRIDGE_POOL_SIZE": "3",
            "BRIDGE_MIN_READY": "2",
            "BRIDGE_DISCARD_SEND_REPLIES": "yes",
            "BRIDGE_ACCESS_LOG": "on",
            "BRIDGE_DELIMITER": " LF ",
            "BRIDGE_MAX_LINE_BYTES": "100",
            "BRIDGE_STALE_REPLY_TIMEOUT": "0",
            "BRIDGE_HEARTBEAT_INTERVAL": "2.5",
        })
        self.assertEqual(
            (config.pool_size, config.min_ready, config.discard_send_replies, config.access_log,
             config.delimiter, config.max_line_bytes, config.stale_reply_timeout,
             config.heartbeat_interval),
            (3, 2, True, True, "lf", 100, None, 2.5),
        )

    def test_event_settings_from_each_source(self) -> None:
        path = self.write_file("event_stall_timeout = 3\nevent_replay = 7\n")
        self.assertEqual(
            (load({}, {}, path).event_stall_timeout, load({}, {}, path).event_replay), (3.0, 7))
        config = load({}, {"BRIDGE_EVENT_STALL_TIMEOUT": "2.5", "BRIDGE_EVENT_REPLAY": "0"}, path)
        self.assertEqual((config.event_stall_timeout, config.event_replay), (2.5, 0))
        config = load({"event_stall_timeout": "1", "event_replay": "5"},
                      {"BRIDGE_EVENT_STALL_TIMEOUT": "2.5", "BRIDGE_EVENT_REPLAY": "0"}, path)
        self.assertEqual((config.event_stall_timeout, config.event_replay), (1.0, 5))
        self.assertEqual((config.sources["event_stall_timeout"], config.sources["event_replay"]),
                         ("--event-stall-timeout", "--event-replay"))

    def test_bad_event_settings(self) -> None:
        self.assertConfigError("event_stall_timeout", environ={"BRIDGE_EVENT_STALL_TIMEOUT": "0"})
        self.assertConfigError("event_replay", environ={"BRIDGE_EVENT_REPLAY": "-1"})
        self.assertConfigError("event_replay", environ={"BRIDGE_EVENT_REPLAY": "1.5"})

    def test_other_environment_variables_are_ignored(self) -> None:
        self.assertEqual(load({}, {"PATH": "/bin", "BACKOFF_MAX": "-1"}), Config())


class TomlFileTests(ConfigTestCase):
    def test_bridge_table(self) -> None:
        path = self.write_file(
            '[bridge]\nupstream = "127.0.0.1:6379"\nbackoff_max = 12\npool_size = 2\n'
            "discard_send_replies = true\n"
        )
        config = load({}, {}, path)
        self.assertEqual(
            (config.upstream, config.backoff_max, config.pool_size, config.discard_send_replies),
            ("127.0.0.1:6379", 12.0, 2, True),
        )
        self.assertIsInstance(config.backoff_max, float)

    def test_top_level_keys(self) -> None:
        path = self.write_file('upstream = "unix:/run/redis.sock"\nreply_timeout = 2.5\n')
        config = load({}, {}, path)
        self.assertEqual((config.upstream, config.reply_timeout), ("unix:/run/redis.sock", 2.5))

    def test_read_toml_returns_the_section(self) -> None:
        path = self.write_file('[bridge]\nlisten = "127.0.0.1:9000"\n')
        self.assertEqual(read_toml(path), {"listen": "127.0.0.1:9000"})

    def test_empty_file_gives_the_defaults(self) -> None:
        self.assertEqual(load({}, {}, self.write_file("")), Config())

    def test_unknown_top_level_key(self) -> None:
        path = self.write_file('colour = "blue"\n')
        error = self.assertConfigError("colour", path=path)
        self.assertEqual(str(error), f"setting 'colour': unknown key in {path}")

    def test_unknown_key_in_bridge_table(self) -> None:
        path = self.write_file("[bridge]\nbackoff_maximum = 3\n")
        error = self.assertConfigError("backoff_maximum", path=path)
        self.assertEqual(
            str(error),
            f"setting 'backoff_maximum': unknown key in {path}; did you mean 'backoff_max'?",
        )

    def test_misspelt_key_suggests_the_closest_known_key(self) -> None:
        cases = {
            "reply_timout": "reply_timeout",
            "stale_reply_timeot": "stale_reply_timeout",
            "listn": "listen",
            "token_fle": "token_file",
        }
        for key, known in cases.items():
            path = self.write_file(f"[bridge]\n{key} = 3\n")
            error = self.assertConfigError(key, path=path)
            self.assertEqual(
                str(error), f"setting {key!r}: unknown key in {path}; did you mean {known!r}?"
            )

    def test_bridge_not_a_table(self) -> None:
        path = self.write_file("bridge = 5\n")
        error = self.assertConfigError("config", path=path)
        self.assertEqual(error.problem, f"{path}: [bridge] must be a table")

    def test_missing_file(self) -> None:
        path = os.path.join(os.path.dirname(self.write_file("")), "missing.toml")
        error = self.assertConfigError("config", path=path)
        self.assertEqual(error.problem, f"cannot read {path}: No such file or directory")

    def test_directory_instead_of_file(self) -> None:
        path = os.path.dirname(self.write_file(""))
        error = self.assertConfigError("config", path=path)
        self.assertEqual(error.problem, f"cannot read {path}: Is a directory")

    def test_invalid_toml(self) -> None:
        path = self.write_file("listen = \n")
        error = self.assertConfigError("config", path=path)
        self.assertTrue(error.problem.startswith(f"{path} is not valid TOML: "), error.problem)

    def test_bad_value_names_the_setting_and_the_file(self) -> None:
        path = self.write_file("reply_timeout = -2\n")
        error = self.assertConfigError("reply_timeout", path=path)
        self.assertEqual(
            error.problem, f"must be a positive number of seconds, got -2 (from {path})"
        )

    def test_nan_in_file(self) -> None:
        path = self.write_file("backoff_max = nan\n")
        error = self.assertConfigError("backoff_max", path=path)
        self.assertEqual(error.problem, f"expected a finite number, got nan (from {path})")

    def test_wrong_toml_type(self) -> None:
        path = self.write_file("pool_size = true\n")
        error = self.assertConfigError("pool_size", path=path)
        self.assertEqual(error.problem, f"expected a whole number, got True (from {path})")


class ValueErrorTests(ConfigTestCase):
    def test_bad_listen_endpoint_string(self) -> None:
        error = self.assertConfigError("listen", {"listen": "nope:x=1"})
        self.assertTrue(
            error.problem.startswith("'nope:x=1' is not a valid server endpoint: "), error.problem
        )
        self.assertTrue(error.problem.endswith(" (from --listen)"), error.problem)

    def test_bad_upstream_endpoint_string(self) -> None:
        error = self.assertConfigError("upstream", {}, {"BRIDGE_UPSTREAM": "tcp:host=example"})
        self.assertTrue(
            error.problem.startswith("'tcp:host=example' is not a valid client endpoint: "),
            error.problem,
        )
        self.assertTrue(error.problem.endswith(" (from BRIDGE_UPSTREAM)"), error.problem)

    def test_upstream_neither_form(self) -> None:
        error = self.assertConfigError("upstream", {"upstream": "redis"})
        self.assertEqual(
            error.problem,
            "'redis' is neither HOST:PORT nor an endpoint string (from --upstream)",
        )

    def test_listen_port_out_of_range(self) -> None:
        error = self.assertConfigError("listen", {"listen": "127.0.0.1:65536"})
        self.assertEqual(error.problem, "port 65536 is out of range 0-65535 (from --listen)")

    def test_upstream_port_out_of_range(self) -> None:
        error = self.assertConfigError("upstream", {"upstream": "localhost:70000"})
        self.assertEqual(error.problem, "port 70000 is out of range 0-65535 (from --upstream)")

    def test_upstream_port_zero(self) -> None:
        error = self.assertConfigError("upstream", {"upstream": "localhost:0"})
        self.assertEqual(
            error.problem, "'localhost:0': port 0 cannot be connected to (from --upstream)"
        )

    def test_negative_timeout(self) -> None:
        error = self.assertConfigError("reply_timeout", {"reply_timeout": "-1"})
        self.assertEqual(
            error.problem, "must be a positive number of seconds, got '-1' (from --reply-timeout)"
        )

    def test_zero_timeout(self) -> None:
        for name in ("connect_timeout", "backoff_initial", "handshake_timeout"):
            error = self.assertConfigError(name, {name: "0"})
            flag = SETTINGS_BY_NAME[name].flag
            self.assertEqual(
                error.problem, f"must be a positive number of seconds, got '0' (from {flag})"
            )

    def test_nan_and_infinity(self) -> None:
        for text in ("nan", "NaN", "inf", "-inf"):
            error = self.assertConfigError("backoff_max", {}, {"BRIDGE_BACKOFF_MAX": text})
            self.assertEqual(
                error.problem, f"expected a finite number, got {text!r} (from BRIDGE_BACKOFF_MAX)"
            )

    def test_not_a_number(self) -> None:
        error = self.assertConfigError("connect_timeout", {"connect_timeout": "soon"})
        self.assertEqual(
            error.problem, "expected a number, got 'soon' (from --connect-timeout)"
        )

    def test_not_a_whole_number(self) -> None:
        error = self.assertConfigError("max_line_bytes", {"max_line_bytes": "1.5"})
        self.assertEqual(
            error.problem, "expected a whole number, got '1.5' (from --max-line-bytes)"
        )

    def test_count_below_one(self) -> None:
        error = self.assertConfigError("pool_size", {"pool_size": "0"})
        self.assertEqual(error.problem, "must be at least 1, got '0' (from --pool-size)")

    def test_factor_below_one(self) -> None:
        error = self.assertConfigError("backoff_factor", {"backoff_factor": "0.5"})
        self.assertEqual(error.problem, "must be 1 or more, got '0.5' (from --backoff-factor)")

    def test_bad_choice(self) -> None:
        error = self.assertConfigError("delimiter", {"delimiter": "cr"})
        self.assertEqual(
            error.problem, "must be one of crlf, lf; got 'cr' (from --delimiter)"
        )

    def test_bad_boolean(self) -> None:
        error = self.assertConfigError("access_log", {}, {"BRIDGE_ACCESS_LOG": "maybe"})
        self.assertEqual(
            error.problem, "expected true or false, got 'maybe' (from BRIDGE_ACCESS_LOG)"
        )

    def test_bad_regex(self) -> None:
        for name in ("reply_error_pattern", "handshake_expect", "heartbeat_expect"):
            error = self.assertConfigError(name, {name: "(unclosed"})
            self.assertTrue(
                error.problem.startswith("is not a valid regular expression: "), error.problem
            )

    def test_good_regex_is_kept(self) -> None:
        self.assertEqual(load({"reply_error_pattern": "^-ERR"}, {}).reply_error_pattern, "^-ERR")
        self.assertIsNone(load({"reply_error_pattern": ""}, {}).reply_error_pattern)


class RelationTests(ConfigTestCase):
    def test_backoff_max_below_backoff_initial(self) -> None:
        error = self.assertConfigError(
            "backoff_max", {"backoff_initial": "10", "backoff_max": "5"}
        )
        self.assertEqual(str(error), "setting 'backoff_max': must be at least backoff_initial "
                         "(10), got 5")

    def test_backoff_max_equal_to_backoff_initial_is_fine(self) -> None:
        config = load({"backoff_initial": "4", "backoff_max": "4"}, {})
        self.assertEqual((config.backoff_initial, config.backoff_max), (4.0, 4.0))

    def test_min_ready_above_pool_size(self) -> None:
        error = self.assertConfigError("min_ready", {}, {"BRIDGE_POOL_SIZE": "2",
                                                         "BRIDGE_MIN_READY": "3"})
        self.assertEqual(str(error), "setting 'min_ready': must not exceed pool_size (2), got 3")

    def test_max_reply_timeout_below_reply_timeout(self) -> None:
        error = self.assertConfigError(
            "max_reply_timeout", {"reply_timeout": "10", "max_reply_timeout": "5"}
        )
        self.assertEqual(error.problem, "must be at least reply_timeout (10), got 5")


class HandshakeTests(ConfigTestCase):
    def test_env_text_is_split_on_newlines(self) -> None:
        config = load({}, {"BRIDGE_HANDSHAKE": "AUTH secret\nSELECT 1"})
        self.assertEqual(config.handshake, ("AUTH secret", "SELECT 1"))

    def test_env_text_final_newline_adds_no_empty_line(self) -> None:
        config = load({}, {"BRIDGE_HANDSHAKE": "AUTH secret\nSELECT 1\n"})
        self.assertEqual(config.handshake, ("AUTH secret", "SELECT 1"))

    def test_env_text_empty_lines_inside_are_kept(self) -> None:
        config = load({}, {"BRIDGE_HANDSHAKE": "A\n\nB"})
        self.assertEqual(config.handshake, ("A", "", "B"))

    def test_empty_env_text_is_no_handshake(self) -> None:
        self.assertEqual(load({}, {"BRIDGE_HANDSHAKE": ""}).handshake, ())

    def test_env_text_with_cr(self) -> None:
        error = self.assertConfigError("handshake", {}, {"BRIDGE_HANDSHAKE": "A\r\nB"})
        self.assertEqual(
            error.problem, "a line may not contain CR or LF (from BRIDGE_HANDSHAKE)"
        )

    def test_toml_array(self) -> None:
        path = self.write_file('handshake = ["AUTH secret", "SELECT 1"]\n')
        self.assertEqual(load({}, {}, path).handshake, ("AUTH secret", "SELECT 1"))

    def test_toml_array_element_with_newline(self) -> None:
        path = self.write_file('handshake = ["AUTH secret\\nFLUSHALL"]\n')
        error = self.assertConfigError("handshake", path=path)
        self.assertEqual(error.problem, f"a line may not contain CR or LF (from {path})")

    def test_repeated_flag(self) -> None:
        config = load({"handshake": ["HELLO", "SELECT 2"]}, {"BRIDGE_HANDSHAKE": "IGNORED"})
        self.assertEqual(config.handshake, ("HELLO", "SELECT 2"))


class MisspeltVariableTests(SynchronousTestCase):
    """An unknown BRIDGE_* variable is a warning, and only when it is a near miss."""

    def test_near_misses_name_the_setting(self) -> None:
        self.assertEqual(
            misspelt_variables({"BRIDGE_REPLY_TIMOUT": "2", "BRIDGE_LOGLEVEL": "debug",
                                "BRIDGE_LISTEN": "127.0.0.1:1", "HOME": "/root"}),
            [
                "environment variable BRIDGE_LOGLEVEL is not a setting and is ignored; "
                "did you mean BRIDGE_LOG_LEVEL?",
                "environment variable BRIDGE_REPLY_TIMOUT is not a setting and is ignored; "
                "did you mean BRIDGE_REPLY_TIMEOUT?",
            ],
        )

    def test_other_software_and_our_own_variables_are_quiet(self) -> None:
        # What Kubernetes puts in every pod when a Service is named "bridge",
        # and the variables the healthcheck, the .tac file and the tests read.
        environ = {name: "x" for name in (
            "BRIDGE_SERVICE_HOST", "BRIDGE_SERVICE_PORT", "BRIDGE_SERVICE_PORT_HTTP",
            "BRIDGE_PORT", "BRIDGE_PORT_8080_TCP", "BRIDGE_PORT_8080_TCP_ADDR",
            "BRIDGE_PORT_8080_TCP_PORT", "BRIDGE_PORT_8080_TCP_PROTO",
            "BRIDGE_CONFIG", "BRIDGE_HEALTHCHECK_URL", "BRIDGE_CONTAINER_TEST",
        )}
        self.assertEqual(misspelt_variables(environ), [])

    def test_misspelt_variables_do_not_change_the_settings(self) -> None:
        self.assertEqual(load({}, {"BRIDGE_REPLY_TIMOUT": "2"}), load({}, {}))
