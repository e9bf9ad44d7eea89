"""The group settings from every source: addresses (--address, TOML array,
newline-separated environment), strategy, failback_after, max_connection_age."""

from __future__ import annotations

from bridge.app.cli import parse_config
from bridge.config import Config, ConfigError, load
from tests.test_cli_config import CliTestCase


class AddressesTests(CliTestCase):
    def test_repeated_address_flag(self) -> None:
        config, _ = parse_config(
            ["--address", "127.0.0.1:6379", "--address", " tls:db.internal:6380 "], {})
        self.assertEqual(config.addresses, ("127.0.0.1:6379", "tls:db.internal:6380"))
        self.assertEqual(config.sources["addresses"], "--address")
        self.assertEqual(config.upstream_label,
                         "group 127.0.0.1:6379, tls:db.internal:6380")

    def test_newline_separated_in_the_environment(self) -> None:
        config = load({}, {"BRIDGE_ADDRESSES": "redis-a:6379\nredis-b:6379\n"})
        self.assertEqual(config.addresses, ("redis-a:6379", "redis-b:6379"))

    def test_toml_array(self) -> None:
        path = self.write_file('addresses = ["redis-a:6379", "unix:/run/redis.sock"]\n'
                               'strategy = "round_robin"\nfailback_after = 0\n'
                               'max_connection_age = 600\n')
        config = load({}, {}, path)
        self.assertEqual(
            (config.addresses, config.strategy, config.failback_after,
             config.max_connection_age),
            (("redis-a:6379", "unix:/run/redis.sock"), "round_robin", 0.0, 600.0),
        )

    def test_defaults(self) -> None:
        config = Config()
        self.assertEqual(
            (config.addresses, config.strategy, config.failback_after,
             config.max_connection_age, config.upstream_label),
            ((), "failover", 30.0, None, "localhost:65432"),
        )

    def test_upstream_and_addresses_together_is_an_error(self) -> None:
        self.assertConfigFailure(
            ["--upstream", "a:1", "--address", "b:1"], {},
            "setting 'addresses': cannot be used together with upstream (set from "
            "--upstream); set one of them",
        )

    def test_together_from_different_sources_too(self) -> None:
        path = self.write_file('addresses = ["b:1"]\n')
        self.assertConfigFailure(
            ["--config", path], {"BRIDGE_UPSTREAM": "a:1"},
            "setting 'addresses': cannot be used together with upstream (set from "
            "BRIDGE_UPSTREAM); set one of them",
        )

    def test_each_address_is_checked_like_upstream(self) -> None:
        self.assertConfigFailure(
            ["--address", "a:1", "--address", "redis"], {},
            "setting 'addresses': address 2: 'redis' is neither HOST:PORT nor an endpoint "
            "string (from --address)",
        )
        with self.assertRaises(ConfigError) as caught:
            load({}, {"BRIDGE_ADDRESSES": "a:1\nb:70000"})
        self.assertEqual(str(caught.exception),
                         "setting 'addresses': address 2: port 70000 is out of range 0-65535 "
                         "(from BRIDGE_ADDRESSES)")

    def test_an_address_twice_is_an_error(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            load({"addresses": ["a:1", "b:1", "a:1"]}, {})
        self.assertEqual(str(caught.exception),
                         "setting 'addresses': a:1 is listed twice (from --address)")

    def test_an_empty_toml_entry_is_an_error(self) -> None:
        path = self.write_file('addresses = ["a:1", ""]\n')
        with self.assertRaises(ConfigError) as caught:
            load({}, {}, path)
        self.assertEqual(caught.exception.problem, f"address 2 is empty (from {path})")

    def test_strategy_is_checked(self) -> None:
        self.assertConfigFailure(
            ["--strategy", "random"], {},
            "setting 'strategy': must be one of failover, round_robin; got 'random' "
            "(from --strategy)",
        )

    def test_failback_after_is_checked(self) -> None:
        self.assertConfigFailure(
            ["--failback-after", "-1"], {},
            "setting 'failback_after': must be zero or a positive number of seconds, got "
            "'-1' (from --failback-after)",
        )

    def test_max_connection_age_0_is_off(self) -> None:
        self.assertIsNone(load({"max_connection_age": "0"}, {}).max_connection_age)
        self.assertEqual(load({"max_connection_age": "90"}, {}).max_connection_age, 90.0)
