"""Several upstreams in one bridge: [upstreams.NAME] tables, --upstream
NAME=ADDR, and [tokens.NAME] tables (issue 11)."""

from __future__ import annotations

import os
import tempfile
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from bridge.config import ConfigError, load
from bridge.config.load import split_upstream_flags


class ConfigFileCase(SynchronousTestCase):
    def file(self, text: str) -> str:
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        path = os.path.join(directory, "bridge.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(textwrap.dedent(text))
        return path

    def error(self, text: str = "", flags: dict[str, object] | None = None) -> str:
        path = self.file(text) if text else None
        error = self.assertRaises(ConfigError, load, flags or {}, {}, path)
        return str(error)


class NamedUpstreamTests(ConfigFileCase):
    def test_tables_define_upstreams_with_their_own_settings(self) -> None:
        path = self.file("""
            upstream = "127.0.0.1:6379"
            reply_framing = "resp"

            [upstreams.cache]
            upstream = "127.0.0.1:11211"
            reply_framing = "memcached"
            pool_size = 2

            [upstreams.metrics]
            upstream = "carbon.internal:2003"
        """)
        config = load({}, {}, path)
        self.assertEqual(list(config.upstreams), ["default", "cache", "metrics"])
        default, cache, metrics = config.upstreams.values()
        self.assertEqual((default.name, default.upstream, default.reply_framing),
                         ("default", "127.0.0.1:6379", "resp"))
        self.assertEqual((cache.name, cache.upstream, cache.reply_framing, cache.pool_size),
                         ("cache", "127.0.0.1:11211", "memcached", 2))
        # Settings a table does not give take their built-in defaults, not the
        # top-level values (those describe the upstream named default).
        self.assertEqual((metrics.reply_framing, metrics.pool_size), ("line", 1))
        self.assertEqual(cache.sources["reply_framing"], f"{path} [upstreams.cache]")
        self.assertEqual(cache.sources["reply_timeout"], "default")
        # Global settings are the bridge's.
        self.assertEqual({c.listen for c in config.upstreams.values()}, {"127.0.0.1:8080"})

    def test_one_upstream_is_still_the_default(self) -> None:
        config = load({"upstream": ["127.0.0.1:6379"]}, {})
        self.assertEqual(list(config.upstreams), ["default"])
        self.assertEqual(config.upstreams["default"].upstream, "127.0.0.1:6379")
        self.assertEqual(list(load({}, {"BRIDGE_UPSTREAM": "a:1"}).upstreams), ["default"])
        self.assertEqual(list(load({}, {}).upstreams), ["default"])  # localhost:65432

    def test_named_flags(self) -> None:
        config = load({"upstream": ["127.0.0.1:6379", "cache=127.0.0.1:11211",
                                    "logs=unix:/run/log.sock"]}, {})
        self.assertEqual({name: c.upstream for name, c in config.upstreams.items()},
                         {"default": "127.0.0.1:6379", "cache": "127.0.0.1:11211",
                          "logs": "unix:/run/log.sock"})

    def test_only_named_upstreams_means_no_default(self) -> None:
        config = load({"upstream": ["cache=127.0.0.1:11211"]}, {})
        self.assertEqual(list(config.upstreams), ["cache"])

    def test_an_endpoint_string_with_an_equals_sign_is_not_a_name(self) -> None:
        plain, named = split_upstream_flags(["tls:db:6380:trustRoots=/etc/ssl/ca"])
        self.assertEqual((plain, named), ("tls:db:6380:trustRoots=/etc/ssl/ca", []))

    def test_a_plain_upstream_twice_is_an_error_not_last_one_wins(self) -> None:
        self.assertEqual(
            self.error(flags={"upstream": ["a:1", "b:2"]}),
            "setting 'upstream': --upstream is given twice (a:1 and b:2); give several "
            "upstreams names: --upstream NAME=ADDR")

    def test_the_same_name_twice_is_an_error(self) -> None:
        self.assertEqual(
            self.error(flags={"upstream": ["c=a:1", "c=b:2"]}),
            "setting 'upstream': --upstream c=... is given twice; each upstream needs its own "
            "name")

    def test_a_flag_and_a_table_with_one_name(self) -> None:
        path = self.file("""
            [upstreams.cache]
            upstream = "a:1"
        """)
        error = self.assertRaises(ConfigError, load, {"upstream": ["cache=b:2"]}, {}, path)
        self.assertEqual(str(error), f"setting 'upstream': the upstream 'cache' is defined "
                         f"twice: by --upstream cache=... and by [upstreams.cache] in {path}")

    def test_a_global_setting_in_a_table(self) -> None:
        text = """
            [upstreams.cache]
            upstream = "a:1"
            listen = "127.0.0.1:9000"
        """
        message = self.error(text)
        self.assertRegex(message, r"^setting 'listen': is a setting of the whole bridge, not of "
                         r"one upstream: set it at the top level of .*, not in "
                         r"\[upstreams.cache\]$")

    def test_a_misspelt_key_in_a_table(self) -> None:
        message = self.error("""
            [upstreams.cache]
            upstream = "a:1"
            reply_framng = "resp"
        """)
        self.assertRegex(message, r"^setting 'reply_framng': unknown key in .* "
                         r"\[upstreams.cache\]; did you mean 'reply_framing'\?$")

    def test_a_bad_value_names_the_upstream(self) -> None:
        message = self.error("""
            [upstreams.cache]
            upstream = "a:1"
            pool_size = 1
            min_ready = 2
        """)
        self.assertEqual(message, "setting 'upstreams.cache.min_ready': must not exceed "
                         "pool_size (1), got 2")

    def test_a_table_without_an_address(self) -> None:
        message = self.error("""
            [upstreams.cache]
            pool_size = 2
        """)
        self.assertRegex(message, r"^setting 'upstreams.cache': .* needs an upstream address$")

    def test_a_bad_name(self) -> None:
        message = self.error("""
            [upstreams."my cache"]
            upstream = "a:1"
        """)
        self.assertEqual(message, "setting 'upstreams.my cache': a name is letters, digits, "
                         "'-' and '_' only")

    def test_top_level_upstream_settings_without_a_default_upstream(self) -> None:
        message = self.error(flags={"upstream": ["cache=a:1"], "reply_framing": "resp"})
        self.assertEqual(message, "setting 'reply_framing': applies to the upstream named "
                         "default, which is not configured: give --upstream ADDR (or upstream "
                         "= ...), or set it in an [upstreams.NAME] table")

    def test_a_default_table_and_top_level_settings(self) -> None:
        message = self.error("""
            upstream = "a:1"
            [upstreams.default]
            upstream = "b:2"
        """)
        self.assertEqual(message, "setting 'upstream': is set at the top level, which "
                         "describes the upstream named default, and [upstreams.default] "
                         "describes it too")

    def test_a_default_table_alone(self) -> None:
        config = load({}, {}, self.file("""
            [upstreams.default]
            upstream = "b:2"
            reply_framing = "resp"
        """))
        self.assertEqual(list(config.upstreams), ["default"])
        self.assertEqual(config.upstreams["default"].reply_framing, "resp")


class ScopedTokenTests(ConfigFileCase):
    def test_tokens_with_scopes(self) -> None:
        directory = tempfile.mkdtemp()
        secret = os.path.join(directory, "ops")
        with open(secret, "w") as handle:
            handle.write("ops-token\n")
        config = load({}, {}, self.file(f"""
            token = "admin-token"
            upstream = "a:1"
            [upstreams.cache]
            upstream = "b:2"
            [tokens.app]
            token = "app-token"
            upstreams = ["cache"]
            routes = ["send", "request"]
            [tokens.ops]
            token_file = "{secret}"
        """))
        app, ops = config.scoped_tokens
        self.assertEqual((app.name, app.token, app.upstreams, app.routes),
                         ("app", "app-token", frozenset({"cache"}),
                          frozenset({"send", "request"})))
        self.assertEqual((ops.name, ops.token, ops.upstreams, ops.routes),
                         ("ops", "ops-token", None, None))
        self.assertTrue(app.allows("cache", "send"))
        self.assertFalse(app.allows("default", "send"))
        self.assertFalse(app.allows("cache", "events"))
        self.assertNotIn("app-token", repr(config))

    def test_scoped_tokens_allow_a_public_listen_address(self) -> None:
        config = load({"listen": "0.0.0.0:8080"}, {}, self.file("""
            [tokens.app]
            token = "app-token"
        """))
        self.assertTrue(config.has_tokens)

    def test_token_errors(self) -> None:
        cases = {
            '[tokens.a]\nupstreams = ["default"]\n':
                "setting 'tokens.a': needs exactly one of token and token_file",
            '[tokens.a]\ntoken = "x"\nupstreams = ["nosuch"]\n':
                "setting 'tokens.a.upstreams': 'nosuch' is not one of default",
            '[tokens.a]\ntoken = "x"\nroutes = ["status"]\n':
                "setting 'tokens.a.routes': 'status' is not one of events, request, send",
            'token = "x"\n[tokens.a]\ntoken = "x"\n':
                "setting 'tokens.a.token': is the same as another token; each token needs its "
                "own value so that its scope is clear",
            '[tokens.a]\ntoken = "x"\nscope = "all"\n':
                None,
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                message = self.error(text)
                if expected is None:
                    self.assertRegex(message, r"^setting 'scope': unknown key in .*\[tokens.a\]")
                else:
                    self.assertEqual(message, expected)

    def test_a_token_value_is_never_echoed(self) -> None:
        message = self.error('token = ["s3cret"]\n')
        self.assertNotIn("s3cret", message)
        self.assertRegex(message, r"^setting 'token': must be text \(from .*\)$")
