"""Settings: one table, four sources, validated once at the edge.

Precedence, highest first: command-line flag, environment variable
``BRIDGE_<NAME>``, TOML file (``--config``), built-in default.  Everything
past this package receives a frozen :class:`Config` of plain typed values.
"""

from bridge.config.load import load, misspelt_variables, read_toml
from bridge.config.model import Config
from bridge.config.settings import SETTINGS, SETTINGS_BY_NAME, Setting
from bridge.config.values import ConfigError

__all__ = [
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "Config",
    "ConfigError",
    "Setting",
    "load",
    "misspelt_variables",
    "read_toml",
]
