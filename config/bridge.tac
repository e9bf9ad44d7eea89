# Run the bridge the classic twistd way:
#
#   twistd -n --pidfile= -y config/bridge.tac
#
# Settings come from BRIDGE_* environment variables and the TOML file named by
# BRIDGE_CONFIG, exactly as for the `bridge` command (flags aside).
import sys

from twisted.application.service import Application
from twisted.logger import ILogObserver

from bridge.app.cli import service_from_environment
from bridge.logs import make_observer

service = service_from_environment()
application = Application("bridge")
# twistd uses this observer instead of its own: BRIDGE_LOG_FORMAT and
# BRIDGE_LOG_LEVEL apply as for the `bridge` command.
config = service.config
application.setComponent(
    ILogObserver, make_observer(sys.stdout, config.log_level, config.log_format)
)
service.setServiceParent(application)
