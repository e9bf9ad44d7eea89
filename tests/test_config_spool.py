"""The spool's settings (issue 12): per upstream, from every source, checked once."""

from __future__ import annotations

from bridge.config import load
from tests.test_config_upstreams import ConfigFileCase


class SpoolSettingsTests(ConfigFileCase):
    def test_off_by_default_with_its_defaults(self) -> None:
        config = load({}, {})
        self.assertEqual((config.spool, config.spool_dir, config.spool_max_bytes,
                          config.spool_fsync), ("off", None, 1 << 30, "always"))

    def test_each_upstream_has_its_own_spool(self) -> None:
        path = self.file("""
            upstream = "127.0.0.1:6379"
            spool = "disk"
            spool_dir = "/var/lib/bridge/default"
            spool_fsync = "never"

            [upstreams.metrics]
            upstream = "127.0.0.1:2003"
            spool = "disk"
            spool_dir = "/var/lib/bridge/metrics"
            spool_max_bytes = 2097152

            [upstreams.cache]
            upstream = "127.0.0.1:11211"
        """)
        upstreams = load({}, {}, path).upstreams
        self.assertEqual(
            {name: (u.spool, u.spool_dir, u.spool_max_bytes, u.spool_fsync)
             for name, u in upstreams.items()},
            {"default": ("disk", "/var/lib/bridge/default", 1 << 30, "never"),
             "metrics": ("disk", "/var/lib/bridge/metrics", 2 << 20, "always"),
             "cache": ("off", None, 1 << 30, "always")})

    def test_flags_and_environment(self) -> None:
        config = load({"spool": "disk", "spool_dir": "/tmp/s"},
                      {"BRIDGE_SPOOL_FSYNC": "never", "BRIDGE_SPOOL_MAX_BYTES": "2097152"})
        self.assertEqual((config.spool, config.spool_dir, config.spool_fsync,
                          config.spool_max_bytes), ("disk", "/tmp/s", "never", 2 << 20))

    def test_disk_needs_a_directory(self) -> None:
        self.assertEqual(self.error(flags={"spool": "disk"}),
                         "setting 'spool_dir': must be set when spool is disk (one directory "
                         "per upstream)")

    def test_a_directory_without_the_spool_is_refused(self) -> None:
        self.assertEqual(self.error(flags={"spool_dir": "/tmp/s"}),
                         "setting 'spool_dir': is only used with spool = disk")

    def test_bad_values_name_the_setting(self) -> None:
        self.assertIn("setting 'spool':", self.error(flags={"spool": "memory"}))
        self.assertIn("setting 'spool_fsync':", self.error(flags={"spool_fsync": "sometimes"}))
        self.assertIn("setting 'spool_max_bytes':", self.error(flags={"spool_max_bytes": "0"}))
        self.assertEqual(self.error(flags={"spool_max_bytes": "65536"}),
                         "setting 'spool_max_bytes': must be at least 1 MiB (1048576), got 65536")

    def test_two_upstreams_cannot_share_a_directory(self) -> None:
        message = self.error("""
            upstream = "127.0.0.1:6379"
            spool = "disk"
            spool_dir = "/var/lib/bridge/spool"

            [upstreams.metrics]
            upstream = "127.0.0.1:2003"
            spool = "disk"
            spool_dir = "/var/lib/bridge/spool/"
        """)
        self.assertEqual(message, "setting 'upstreams.metrics.spool_dir': /var/lib/bridge/spool/ "
                         "is also the spool_dir of the upstream 'default'; each upstream needs "
                         "its own")

    def test_a_table_without_a_directory_is_named(self) -> None:
        message = self.error("""
            [upstreams.metrics]
            upstream = "127.0.0.1:2003"
            spool = "disk"
        """)
        self.assertTrue(message.startswith("setting 'upstreams.metrics.spool_dir':"), message)
