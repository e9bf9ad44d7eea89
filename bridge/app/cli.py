"""The ``bridge`` command: parse settings, start the service tree, run.

``bridge [OPTIONS]`` runs the daemon; ``bridge healthcheck`` probes one.
The probe runs every few seconds in containers, so :func:`main` dispatches
to it before anything heavy is imported: the settings module (which needs
Twisted's endpoint parser) is imported inside the functions that use it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from bridge import __version__

if TYPE_CHECKING:
    from bridge.config import Config, Setting

EXIT_CONFIG = 2


def _help_for(setting: Setting) -> str:
    default = setting.default
    if default in (None, "", ()):
        shown = "none"
    elif isinstance(default, bool):
        shown = "true" if default else "false"
    else:
        shown = str(default)
    text = setting.help.replace("%", "%%")
    return f"{text} (default: {shown}; env {setting.env})"


def build_parser() -> argparse.ArgumentParser:
    from bridge.config import SETTINGS

    parser = argparse.ArgumentParser(
        prog="bridge",
        description="HTTP-to-TCP line bridge: POST lines over HTTP to a line-oriented TCP "
        "server through a persistent, self-healing connection.",
        epilog="Settings come from (highest first) these flags, BRIDGE_* environment "
        "variables, the TOML file given by --config (env BRIDGE_CONFIG), then defaults. "
        "Subcommand: 'bridge healthcheck --help' probes a running bridge.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help="TOML settings file (env BRIDGE_CONFIG)")
    parser.add_argument("--demo", action="store_true",
                        help="also start a demo upstream line server on a loopback port and "
                        "connect to it (answers every line with 'OK <line>')")
    for setting in SETTINGS:
        if setting.flag_kind == "switch" or isinstance(setting.default, bool):
            parser.add_argument(setting.flag, dest=setting.name,
                                action=argparse.BooleanOptionalAction, help=_help_for(setting))
        elif setting.flag_kind == "append":
            parser.add_argument(setting.flag, dest=setting.name, action="append",
                                metavar=setting.metavar, help=_help_for(setting))
        else:
            parser.add_argument(setting.flag, dest=setting.name, metavar=setting.metavar,
                                help=_help_for(setting))
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[Config, bool]:
    """Return the validated config and whether --demo was given."""
    from bridge.config import load

    namespace = vars(build_parser().parse_args(list(argv)))
    config_path = namespace.pop("config", None) or environ.get("BRIDGE_CONFIG") or None
    demo = bool(namespace.pop("demo", False))
    return load(namespace, environ, config_path), demo


def fail(message: str, status: int = EXIT_CONFIG) -> int:
    print(f"bridge: error: {message}", file=sys.stderr)
    return status


def run(
    config: Config,
    demo: bool,
    environ: Mapping[str, str] | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> int:
    """Start the reactor with the service tree; return the exit status."""
    from twisted.internet import reactor as _reactor
    from twisted.logger import globalLogBeginner

    from bridge.app.allocator import keep_freed_memory
    from bridge.app.service import BridgeService
    from bridge.logs import make_observer

    keep_freed_memory()
    reactor: Any = _reactor
    globalLogBeginner.beginLoggingTo(
        [make_observer(sys.stdout, config.log_level, config.log_format)],
        redirectStandardIO=False,
    )
    from twisted.logger import Logger

    log = Logger(namespace="bridge")
    if demo:
        from bridge.app.demo import listen_demo

        port = listen_demo(reactor)
        address = f"127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        log.info("demo upstream listening on {address}", address=address)
        # The demo server answers every line, /send lines too: reserve and
        # discard those replies so that they never reach a /request caller.
        config = demo_config(config, address)
        if reload_config is not None:
            read_again = reload_config
            reload_config = lambda: demo_config(read_again(), address)  # noqa: E731

    exit_status = [0]

    def fatal(message: str, status: int) -> None:
        if exit_status[0]:
            return  # already stopping; reactor.stop() twice would raise
        log.error("{why}", why=message)
        print(f"bridge: error: {message}", file=sys.stderr)
        exit_status[0] = status
        if reactor.running:
            reactor.stop()

    service = BridgeService(config, reactor, on_fatal=fatal)
    log.info("bridge {version} starting: upstream {upstream}, listen {listen}",
             version=__version__, upstream=describe_upstreams(config), listen=config.listen)
    log_configuration(log, config, os.environ if environ is None else environ)
    if reload_config is not None:
        reload_on_sighup(reactor, service, reload_config)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger(
        "before", "shutdown", service.stopService
    )
    reactor.run()
    log.info("bridge stopped")
    return exit_status[0]


def demo_config(config: Config, address: str) -> Config:
    """The demo upstream as the upstream named default.  It answers every
    line, /send lines too: reserve and discard those replies so that they
    never reach a /request caller."""
    return config.with_values(upstream=address, addresses=(), discard_send_replies=True)


def describe_upstreams(config: Config) -> str:
    """The upstreams for the start-up line: an address, or NAME=address each."""
    upstreams = config.upstreams
    if list(upstreams) == ["default"]:
        return upstreams["default"].upstream_label
    return ", ".join(f"{name}={upstream.upstream_label}" for name, upstream in upstreams.items())


def reload_on_sighup(reactor: Any, service: Any, load: Callable[[], Config]) -> None:
    """SIGHUP reads the configuration again and applies it (bridge.app.reload)."""
    import signal

    from bridge.app.reload import Reloader

    reloader = Reloader(service, load)

    def handler(signum: int, frame: object) -> None:
        reactor.callFromThread(reloader.reload)

    signal.signal(signal.SIGHUP, handler)


def log_configuration(log: Any, config: Config, environ: Mapping[str, str]) -> None:
    """Say where the settings came from: which file (or none), and which
    BRIDGE_* variables look like misspelt settings (they are ignored)."""
    from bridge.config import misspelt_variables

    if config.config_file:
        log.info("configuration file {path} loaded", path=os.path.abspath(config.config_file))
    else:
        log.info("no configuration file (none given with --config or BRIDGE_CONFIG): "
                 "settings from flags, BRIDGE_* variables and defaults")
    for warning in misspelt_variables(environ):
        log.warn("{warning}", warning=warning)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args[:1] == ["healthcheck"]:
        from bridge.app.healthcheck import main as healthcheck

        return healthcheck(args[1:])
    from bridge.config import ConfigError

    try:
        config, demo = parse_config(args, env)
    except ConfigError as error:
        return fail(str(error))
    return run(config, demo, env, lambda: parse_config(args, env)[0])


def service_from_environment(environ: Mapping[str, str] | None = None) -> Any:
    """The service tree configured from BRIDGE_* and BRIDGE_CONFIG (for .tac files)."""
    from twisted.internet import reactor
    from twisted.logger import Logger

    from bridge.app.allocator import keep_freed_memory
    from bridge.app.service import BridgeService
    from bridge.config import ConfigError, load

    log = Logger(namespace="bridge")
    keep_freed_memory()
    env = os.environ if environ is None else environ
    try:
        config = load({}, env, env.get("BRIDGE_CONFIG") or None)
    except ConfigError as error:
        raise SystemExit(fail(str(error))) from None

    stopping: list[bool] = []

    def fatal(message: str, status: int) -> None:
        # Without this a failed listen (port in use) or startup_max_attempts
        # was silent under twistd, and the process ran on without HTTP.
        if stopping:
            return
        stopping.append(True)
        log.error("{why}", why=message)
        if reactor.running:
            reactor.stop()
        else:  # twistd starts the services before it runs the reactor
            reactor.callWhenRunning(reactor.stop)

    # twistd keeps these until its log observer starts.
    log_configuration(log, config, env)
    service = BridgeService(config, reactor, on_fatal=fatal)
    reload_on_sighup(reactor, service,
                     lambda: load({}, env, env.get("BRIDGE_CONFIG") or None))
    return service
