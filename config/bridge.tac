# Run the bridge the classic twistd way:
#
#   twistd -n --pidfile= -y config/bridge.tac
#
# Settings come from BRIDGE_* environment variables and the TOML file named by
# BRIDGE_CONFIG, exactly as for the `bridge` command (flags aside).
from twisted.application.service import Application

from bridge.cli import service_from_environment

application = Application("bridge")
service_from_environment().setServiceParent(application)
