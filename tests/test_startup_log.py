"""What the start-up log says about where the settings came from.

Real ``bridge`` and ``twistd`` processes: the configuration file that was
loaded (or that none was), one line; a BRIDGE_* variable that looks like a
misspelt setting, one warning naming the setting.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from tests.base import BridgeTestCase
from tests.bridge_process import REPO, BridgeProcess

NO_FILE = ("[bridge#info] no configuration file (none given with --config or BRIDGE_CONFIG): "
           "settings from flags, BRIDGE_* variables and defaults")


def log_lines(output: str) -> list[str]:
    """The log without timestamps."""
    return [re.sub(r"^\S+ ", "", line) for line in output.splitlines()]


class StartupLogTests(BridgeTestCase):
    shared_bridge = False

    def config_file(self) -> str:
        directory = tempfile.mkdtemp(prefix="bridge-startup-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "bridge.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write('upstream = "127.0.0.1:1"\nreply_timeout = 2.0\n')
        return path

    async def test_the_loaded_file_and_a_misspelt_variable(self) -> None:
        path = self.config_file()
        bridge = await self.start_bridge("--config", path, "--listen", "127.0.0.1:0",
                                         env={"BRIDGE_REPLY_TIMOUT": "9"})
        lines = log_lines(bridge.stdout())
        self.assertIn(f"[bridge#info] configuration file {path} loaded", lines)
        self.assertIn("[bridge#warn] environment variable BRIDGE_REPLY_TIMOUT is not a setting "
                      "and is ignored; did you mean BRIDGE_REPLY_TIMEOUT?", lines)
        self.assertEqual(sum("configuration file" in line for line in lines), 1, lines)
        assert self.http is not None
        status = (await self.http.get("/status")).json()
        self.assertEqual(status["upstream"], "127.0.0.1:1")  # the file was used

    async def test_no_file(self) -> None:
        bridge = await self.start_bridge("--demo", "--listen", "127.0.0.1:0")
        lines = log_lines(bridge.stdout())
        self.assertIn(NO_FILE, lines)
        self.assertEqual([line for line in lines if "#warn" in line], [])

    async def test_twistd_says_it_too(self) -> None:
        path = self.config_file()
        twistd = await self.use(BridgeProcess.twistd(
            REPO / "config" / "bridge.tac",
            {"BRIDGE_CONFIG": path, "BRIDGE_LISTEN": "127.0.0.1:0", "BRIDGE_LOGLEVEL": "debug"},
        ))
        lines = log_lines(twistd.stdout())
        self.assertIn(f"[bridge#info] configuration file {path} loaded", lines)
        self.assertIn("[bridge#warn] environment variable BRIDGE_LOGLEVEL is not a setting "
                      "and is ignored; did you mean BRIDGE_LOG_LEVEL?", lines)
