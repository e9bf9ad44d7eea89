"""The container and orchestration files agree with the Kubernetes schemas and
with the bridge itself; and the image works (`make container-test`, when a
Docker daemon is reachable; BRIDGE_CONTAINER_TEST=0 skips it).

Checked against the code, not against copies of it: the settings table
(:data:`bridge.config.SETTINGS`), the routes of :data:`bridge.http.routes.ROUTES`
and ``bridge healthcheck``'s default URL.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

from bridge.app import healthcheck
from bridge.config import SETTINGS, SETTINGS_BY_NAME, Config, ConfigError, load
from bridge.config.load import OTHER_VARIABLES
from bridge.http.routes import ROUTES as ROUTE_TABLE
from bridge.http.routes import RouteTable

REPO = Path(__file__).resolve().parent.parent
KUBERNETES = REPO / "config" / "kubernetes"
COMPOSE = REPO / "config" / "docker-compose.yml"
UPSTREAMS_TOML = REPO / "config" / "upstreams" / "bridge.toml"
DOCKERFILE = REPO / "Dockerfile"
README = REPO / "README.md"

# Oldest Kubernetes the examples are meant for, and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
SETTING_ENVS = {setting.env for setting in SETTINGS}
BRIDGE_VARIABLES = SETTING_ENVS | OTHER_VARIABLES  # BRIDGE_CONFIG too
DRAIN_MARGIN = 2.0  # seconds beyond shutdown_delay + shutdown_grace, at least


def listen_port(listen: str) -> int:
    """The TCP port of a HOST:PORT listen setting."""
    match = re.fullmatch(r"(?:\[[^\]]*\]|[^:]*):(\d+)", listen)
    assert match, f"not a HOST:PORT listen address: {listen!r}"
    return int(match.group(1))


DEFAULT_PORT = listen_port(Config().listen)
ROUTES = {route.label for route in ROUTE_TABLE}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((path.name, document))
    return documents


def find(kind: str, name: str) -> dict[str, Any]:
    for _, document in manifests():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in {KUBERNETES}")


def seconds(value: str | None, setting: str) -> float:
    return float(value) if value is not None else float(SETTINGS_BY_NAME[setting].default)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines()
             if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, arguments in instructions:
        if name == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(arguments: str) -> list[str]:
    words = yaml.safe_load(arguments)  # a JSON array is YAML too
    assert isinstance(words, list), f"not exec form: {arguments}"
    return [str(word) for word in words]


def load_with_file(environ: dict[str, str], toml_text: str) -> Config:
    """The configuration a container sees: ``environ`` plus the TOML file
    that BRIDGE_CONFIG names (written to a temporary file here)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bridge.toml"
        path.write_text(toml_text)
        try:
            return load({}, {**environ, "BRIDGE_CONFIG": str(path)}, str(path))
        except ConfigError as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"not a valid configuration: {error}") from error


def paths_used(script: str, base: str) -> list[str]:
    """The bridge paths a client script names after ``base``."""
    return re.findall(re.escape(base) + r"(/[A-Za-z0-9_/-]*)", script)


def routed(config: Config, method: str, path: str) -> bool:
    """Whether the bridge started with ``config`` serves this: a route, and
    for /send, /request and /events an upstream of that name."""
    table = RouteTable(upstreams=tuple(config.upstreams))
    decision = table.decide(method.encode(), path.encode())
    if decision.route is None:
        return False
    return decision.route.scope is None or decision.upstream in config.upstreams


class KubernetesSchemaTests(unittest.TestCase):
    def test_the_schemas_ship_with_the_package(self) -> None:
        # Validation must work offline: no schema is fetched at run time.
        schemas = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
        for version in KUBERNETES_VERSIONS:
            major_minor = ".".join(version.split(".")[:2])
            directory = schemas.joinpath(f"v{major_minor}.0-local-strict")
            self.assertTrue(directory.joinpath("deployment-apps-v1.json").is_file(), directory)

    def test_every_manifest_is_valid(self) -> None:
        documents = manifests()
        kinds = sorted({document["kind"] for _, document in documents})
        self.assertEqual(kinds, ["ConfigMap", "Deployment", "Service"])
        for name, document in documents:
            for version in KUBERNETES_VERSIONS:
                with self.subTest(file=name, kind=document["kind"], version=version):
                    kubernetes_validate.validate(document, version, strict=True)

    def test_the_validator_can_fail(self) -> None:
        deployment = copy.deepcopy(find("Deployment", "example-app"))
        bridge = deployment["spec"]["template"]["spec"]["containers"][1]
        bridge["livenessprobe"] = bridge.pop("livenessProbe")  # a typo strict mode catches
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
        bridge["livenessProbe"] = bridge.pop("livenessprobe")
        bridge["ports"][0]["containerPort"] = "8080"  # a string where an integer belongs
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


class KubernetesSidecarTests(unittest.TestCase):
    def setUp(self) -> None:
        self.deployment = find("Deployment", "example-app")
        self.pod = self.deployment["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in self.pod["containers"]}
        self.bridge = containers["bridge"]
        self.app = containers["app"]
        config_maps = [source["configMapRef"]["name"] for source in self.bridge["envFrom"]]
        self.assertEqual(len(config_maps), 1)
        self.settings: dict[str, str] = find("ConfigMap", config_maps[0])["data"]
        self.mounts = {m["mountPath"]: m["name"] for m in self.bridge["volumeMounts"]}
        self.volumes = {v["name"]: v for v in self.pod["volumes"]}

    def toml_text(self) -> str:
        """The file BRIDGE_CONFIG names, as the pod sees it (a ConfigMap key)."""
        directory, _, filename = self.settings["BRIDGE_CONFIG"].rpartition("/")
        self.assertIn(directory, self.mounts, "BRIDGE_CONFIG is not on a mounted volume")
        source = self.volumes[self.mounts[directory]]["configMap"]["name"]
        return str(find("ConfigMap", source)["data"][filename])

    def config(self) -> Config:
        environ = dict(self.settings)
        environ.pop("BRIDGE_TOKEN_FILE")
        environ["BRIDGE_TOKEN"] = "from-the-secret"  # what load() reads from token_file
        return load_with_file(environ, self.toml_text())

    def port_number(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        named = {p["name"]: p["containerPort"] for p in self.bridge["ports"]}
        return int(named[port])

    def test_probes_use_the_bridge_routes_and_port(self) -> None:
        paths = {"livenessProbe": "/healthz", "readinessProbe": "/readyz",
                 "startupProbe": "/healthz"}
        listen = listen_port(self.settings["BRIDGE_LISTEN"])
        self.assertEqual(listen, DEFAULT_PORT)
        self.assertEqual([p["containerPort"] for p in self.bridge["ports"]], [DEFAULT_PORT])
        for probe, path in paths.items():
            with self.subTest(probe=probe):
                get = self.bridge[probe]["httpGet"]
                self.assertEqual(get["path"], path)
                self.assertIn(path, ROUTES)
                self.assertEqual(self.port_number(get["port"]), listen)
                self.assertEqual(get.get("scheme", "HTTP"), "HTTP")

    def test_the_listen_address_is_reachable_by_the_kubelet(self) -> None:
        # httpGet probes connect to the pod IP, never to 127.0.0.1.
        self.assertTrue(self.settings["BRIDGE_LISTEN"].startswith("0.0.0.0:"))

    def test_the_settings_are_valid_bridge_settings(self) -> None:
        unknown = set(self.settings) - BRIDGE_VARIABLES
        self.assertEqual(unknown, set(), "ConfigMap keys the bridge does not know")
        config = self.config()
        self.assertEqual(config.token, "from-the-secret")
        token_file = self.settings["BRIDGE_TOKEN_FILE"]
        directory = os.path.dirname(token_file)
        self.assertIn(directory, self.mounts, "BRIDGE_TOKEN_FILE is not on a mounted volume")
        secret = self.volumes[self.mounts[directory]]["secret"]
        self.assertEqual(secret["secretName"], "bridge-token")
        self.assertEqual(self.pod["securityContext"]["fsGroup"], 10001)

    def test_the_upstreams_file_is_config_upstreams_toml(self) -> None:
        # One text for compose and Kubernetes: an edit to one reaches the other.
        self.assertEqual(self.toml_text(), UPSTREAMS_TOML.read_text())
        # Mounted as a directory: a subPath mount would never see an update.
        mount = next(m for m in self.bridge["volumeMounts"]
                     if m["mountPath"] == os.path.dirname(self.settings["BRIDGE_CONFIG"]))
        self.assertNotIn("subPath", mount)
        self.assertTrue(mount["readOnly"])

    def test_named_upstreams_reach_the_example_services(self) -> None:
        config = self.config()
        self.assertFalse(config.default_upstream)
        upstreams = config.upstreams
        self.assertEqual({name: (u.upstream, u.reply_framing) for name, u in upstreams.items()},
                         {"redis": ("redis:6379", "resp"),
                          "cache": ("memcached:11211", "memcached")})
        services = {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == "Service"}
        for name, upstream in upstreams.items():
            with self.subTest(upstream=name):
                host, _, port = upstream.upstream.rpartition(":")
                self.assertIn(host, services, f"no Service {host} for upstream {name}")
                ports = [p["port"] for p in services[host]["spec"]["ports"]]
                self.assertIn(int(port), ports)
                self.assertTrue(upstream.required)  # so /readyz waits for it

    def test_the_app_talks_to_the_bridge_on_loopback(self) -> None:
        script = "\n".join(self.app["args"])
        self.assertIn(f'"http://127.0.0.1:{DEFAULT_PORT}" + path', script)
        self.assertIn("/var/run/secrets/bridge/token", script)
        paths = re.findall(r'post\("([^"]+)"', script)
        self.assertEqual(paths, ["/u/redis/request", "/u/cache/request"])
        config = self.config()
        for path in paths:
            self.assertTrue(routed(config, "POST", path), path)
        self.assertFalse(routed(config, "POST", "/u/nosuch/request"))  # the check can fail

    def test_termination_grace_covers_the_drain(self) -> None:
        delay = seconds(self.settings.get("BRIDGE_SHUTDOWN_DELAY"), "shutdown_delay")
        grace = seconds(self.settings.get("BRIDGE_SHUTDOWN_GRACE"), "shutdown_grace")
        self.assertGreater(delay, 0, "the app still sends during its own shutdown")
        self.assertGreaterEqual(self.pod["terminationGracePeriodSeconds"],
                                delay + grace + DRAIN_MARGIN)

    def test_every_container_is_locked_down(self) -> None:
        self.assertTrue(self.pod["securityContext"]["runAsNonRoot"])
        for container in self.pod["containers"]:
            with self.subTest(container=container["name"]):
                context = container["securityContext"]
                self.assertTrue(context["runAsNonRoot"])
                self.assertTrue(context["readOnlyRootFilesystem"])
                self.assertFalse(context["allowPrivilegeEscalation"])
                self.assertEqual(context["capabilities"]["drop"], ["ALL"])
                for kind in ("requests", "limits"):
                    self.assertEqual(set(container["resources"][kind]), {"cpu", "memory"})

    def test_the_bridge_runs_as_the_image_user_with_a_writable_tmp(self) -> None:
        user = dict(final_stage())["USER"]
        self.assertEqual(f"{self.bridge['securityContext']['runAsUser']}:"
                         f"{self.bridge['securityContext']['runAsGroup']}", user)
        mounts = {m["mountPath"]: m["name"] for m in self.bridge["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        self.assertIn("emptyDir", volumes[mounts["/tmp"]])
        self.assertEqual(env_of(final_stage())["TMPDIR"], "/tmp")


class DockerfileTests(unittest.TestCase):
    def setUp(self) -> None:
        self.all = dockerfile_instructions()
        self.final = final_stage()
        self.by_name = dict(self.final)
        self.env = env_of(self.final)

    def test_multi_stage_from_python_3_12_slim(self) -> None:
        bases = [arguments for name, arguments in self.all if name == "FROM"]
        self.assertEqual(bases, ["python:3.12-slim AS build", "python:3.12-slim"])
        copies = [arguments for name, arguments in self.final if name == "COPY"]
        self.assertEqual(copies, ["--from=build /wheels /wheels"])
        install = next(arguments for name, arguments in self.final if name == "RUN"
                       and "pip install" in arguments)
        self.assertIn("--no-index", install)

    def test_listen_expose_and_healthcheck_agree_with_the_bridge(self) -> None:
        self.assertEqual(listen_port(self.env["BRIDGE_LISTEN"]), DEFAULT_PORT)
        self.assertEqual(self.env["BRIDGE_LISTEN"], f"0.0.0.0:{DEFAULT_PORT}")
        self.assertEqual(self.by_name["EXPOSE"], str(DEFAULT_PORT))
        self.assertEqual(urlsplit(healthcheck.DEFAULT_URL).port, DEFAULT_PORT)
        options, _, command = self.by_name["HEALTHCHECK"].partition("CMD ")
        words = exec_form(command)
        self.assertEqual(words[:2], ["bridge", "healthcheck"])
        self.assertNotIn("--url", words)  # the default URL, checked above
        self.assertIn("/healthz", ROUTES)
        self.assertIn("--interval=", options)
        self.assertEqual(exec_form(self.by_name["ENTRYPOINT"]), ["bridge"])

    def test_runtime_settings(self) -> None:
        self.assertRegex(self.by_name["USER"], r"^[1-9]\d*:[1-9]\d*$")  # numeric, not root
        self.assertEqual(self.by_name["STOPSIGNAL"], "SIGTERM")
        self.assertEqual(self.env["PYTHONUNBUFFERED"], "1")
        self.assertEqual(self.env["TMPDIR"], "/tmp")
        self.assertEqual(exec_form(self.by_name["VOLUME"]), ["/tmp"])
        self.assertEqual({k for k in self.env if k.startswith("BRIDGE_")} - SETTING_ENVS,
                         set())

    def test_dockerignore_keeps_the_context_small(self) -> None:
        ignored = set((REPO / ".dockerignore").read_text().split())
        for entry in (".venv", ".git", "tests", "bench", ".mypy_cache", ".ruff_cache",
                      ".pytest_cache", "**/__pycache__"):
            self.assertIn(entry, ignored)


class ComposeTests(unittest.TestCase):
    """config/docker-compose.yml: named upstreams, from
    config/upstreams/bridge.toml mounted into the container."""

    def setUp(self) -> None:
        self.services: dict[str, Any] = dict(yaml.safe_load(COMPOSE.read_text())["services"])
        self.bridge = self.services["bridge"]

    def bridge_config(self) -> Config:
        """The bridge's configuration, as the container sees it: its
        environment and the file in the directory mounted for BRIDGE_CONFIG."""
        environ = {key: str(value) for key, value in self.bridge["environment"].items()}
        environ["BRIDGE_TOKEN"] = "from-the-host"
        environ["BRIDGE_LISTEN"] = f"0.0.0.0:{DEFAULT_PORT}"  # the image's ENV
        mounts = {}
        for volume in self.bridge["volumes"]:
            source, mounted, mode = volume.split(":")
            self.assertEqual(mode, "ro")
            mounts[mounted] = (COMPOSE.parent / source).resolve()
        directory, _, filename = environ["BRIDGE_CONFIG"].rpartition("/")
        # A directory: a bind-mounted file would not follow an edit (new inode).
        self.assertIn(directory, mounts, "BRIDGE_CONFIG is not in a mounted directory")
        self.assertEqual(mounts[directory], UPSTREAMS_TOML.parent)
        return load_with_file(environ, (mounts[directory] / filename).read_text())

    def test_readiness_gates_the_client(self) -> None:
        self.assertEqual(self.bridge["healthcheck"]["test"],
                         ["CMD", "bridge", "healthcheck", "--ready"])
        self.assertEqual(self.services["client"]["depends_on"]["bridge"]["condition"],
                         "service_healthy")

    def test_the_client_uses_routes_the_bridge_has(self) -> None:
        paths = ["/readyz", "/u/redis/request", "/u/cache/request", "/request"]
        script = "\n".join(self.services["client"]["command"])
        self.assertIn(f"bridge=http://bridge:{DEFAULT_PORT}\n", script)
        self.assertEqual(paths_used(script, "$$bridge"), paths)
        config = self.bridge_config()
        for route in paths:
            method = "GET" if route.endswith("readyz") else "POST"
            # The example shows the 404 of /request (no upstream "default") on purpose.
            self.assertEqual(routed(config, method, route), route != "/request", route)
        self.assertIn("Authorization: Bearer $$BRIDGE_TOKEN", script)

    def test_the_named_upstreams_are_the_compose_services(self) -> None:
        config = self.bridge_config()
        self.assertEqual({name: (u.upstream, u.reply_framing)
                          for name, u in config.upstreams.items()},
                         {"redis": ("redis:6379", "resp"),
                          "cache": ("memcached:11211", "memcached")})
        for name, upstream in config.upstreams.items():
            with self.subTest(upstream=name):
                host = upstream.upstream.rpartition(":")[0]
                self.assertIn(host, self.services)
                self.assertIn(host, self.bridge["depends_on"])

    def test_bridge_settings_port_and_lockdown(self) -> None:
        environment = self.bridge["environment"]
        self.assertEqual(set(environment) - BRIDGE_VARIABLES, set())
        self.assertIn("BRIDGE_TOKEN", environment)
        # The default host port is the bridge's; BRIDGE_HOST_PORT= picks a free one.
        self.assertEqual(self.bridge["ports"],
                         [f"127.0.0.1:${{BRIDGE_HOST_PORT-{DEFAULT_PORT}}}:{DEFAULT_PORT}"])
        self.assertTrue(self.bridge["read_only"])
        self.assertEqual(self.bridge["tmpfs"], ["/tmp"])
        self.assertEqual(self.bridge["cap_drop"], ["ALL"])
        delay = seconds(environment.get("BRIDGE_SHUTDOWN_DELAY"), "shutdown_delay")
        grace = seconds(environment.get("BRIDGE_SHUTDOWN_GRACE"), "shutdown_grace")
        stop = float(self.bridge["stop_grace_period"].rstrip("s"))
        self.assertGreaterEqual(stop, delay + grace + DRAIN_MARGIN)


def docker_unavailable() -> str | None:
    """Why the image test cannot run here, or None."""
    if os.environ.get("BRIDGE_CONTAINER_TEST") == "0":
        return ("BRIDGE_CONTAINER_TEST=0: not building and running the image "
                "(make container-test; about 1-2 minutes, several more for the first build)")
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 15 s"
    if probe.returncode != 0:
        # A clone has only itself: name no helper outside the repository.
        return ("no Docker daemon reachable (docker info failed): start one, or point "
                "DOCKER_HOST at one")
    return None


class ContainerImageTests(unittest.TestCase):
    def test_make_container_test(self) -> None:
        reason = docker_unavailable()
        if reason:
            self.skipTest(reason)
        result = subprocess.run(["make", "-C", str(REPO), "container-test"],
                                capture_output=True, text=True, timeout=1800)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("container-test: passed", result.stdout)


def compose_command() -> list[str] | None:
    """Docker Compose v2 (`docker compose`) or v1 (`docker-compose`), or None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True,
                               timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


# The README shows each compose example's client output after this marker.
README_OUTPUT = re.compile(r"<!-- compose-output: (\S+) -->\n```[a-z]*\n(.*?)```", re.DOTALL)


def readme_outputs() -> dict[str, str]:
    return {name: text for name, text in README_OUTPUT.findall(README.read_text())}


class ComposeCase(unittest.TestCase):
    """Skipped without a Docker daemon or Compose; ``self.compose`` runs it."""

    def setUp(self) -> None:
        reason = docker_unavailable()
        if reason:
            self.skipTest(reason)
        compose = compose_command()
        if compose is None:
            self.skipTest("no Docker Compose: neither `docker compose` nor `docker-compose`")
        self.compose = compose


class ComposeReadmeTests(unittest.TestCase):
    def test_the_readme_shows_the_output_of_both_examples(self) -> None:
        outputs = readme_outputs()
        self.assertEqual(sorted(outputs), ["config/docker-compose.yml"])
        for name in outputs:
            self.assertTrue((REPO / name).is_file(), name)


class ComposeRunTests(ComposeCase):
    """Runs the compose example as the README says (`up --build
    --exit-code-from client`) and compares the client's output with the
    README's, byte for byte. A private project name and a free host port,
    so that runs side by side do not meet."""

    def run_example(self, path: Path) -> str:
        # Compose v1 keeps only [a-z0-9] of a project name: use nothing else.
        project = f"bridgect{os.getpid()}{re.sub('[^a-z0-9]', '', path.stem)}"
        environ = {**os.environ, "BRIDGE_TOKEN": secrets.token_hex(16), "BRIDGE_HOST_PORT": ""}
        base = [*self.compose, "-p", project, "-f", str(path)]
        self.addCleanup(subprocess.run, [*base, "down", "-v", "--remove-orphans"],
                        env=environ, capture_output=True, timeout=300)
        result = subprocess.run([*base, "up", "--build", "--exit-code-from", "client"],
                                env=environ, capture_output=True, text=True, timeout=1800)
        self.assertEqual(result.returncode, 0, result.stdout[-6000:] + result.stderr[-3000:])

        def container(service: str) -> str:
            listed = subprocess.run(
                ["docker", "ps", "-a", "-q",
                 "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", f"label=com.docker.compose.service={service}"],
                capture_output=True, text=True, check=True, timeout=60).stdout.split()
            self.assertEqual(len(listed), 1, f"containers of {service}: {listed}")
            return listed[0]

        # Compose stopped the bridge with SIGTERM once the client was done: a drain.
        code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}",
                               container("bridge")],
                              capture_output=True, text=True, check=True, timeout=60).stdout
        self.assertEqual(code.strip(), "0", "the bridge's exit status after docker stop")
        logs = subprocess.run(["docker", "logs", container("client")],
                              capture_output=True, text=True, check=True, timeout=60)
        return logs.stdout + logs.stderr

    def test_named_upstreams_from_the_mounted_file(self) -> None:
        output = self.run_example(COMPOSE)
        self.assertEqual(output, readme_outputs()["config/docker-compose.yml"])
        self.assertIn('{"replies": ["OK", 1, "hello"]}', output)  # RESP values, not lines
        self.assertIn('{"replies": [["STORED"], ["VALUE greeting 0 5", "hello", "END"]]}',
                      output)


def docker_cli(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stdout}{result.stderr}")
    return result.stdout.strip()


def poll(predicate: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)  # polling interval, not synchronisation
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class ComposeReloadTests(ComposeCase):
    """config/docker-compose.yml with its directory of upstreams replaced by a
    copy (an override file): an upstream added to the file, saved the way
    editors do (a new file renamed over the old), then SIGHUP through
    Compose, reaches the running bridge; the others keep their connection."""

    def test_sighup_reads_the_mounted_file_again(self) -> None:
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        configs = directory / "config"
        configs.mkdir()
        os.chmod(directory, 0o755)
        os.chmod(configs, 0o755)
        toml = configs / "bridge.toml"
        toml.write_text(UPSTREAMS_TOML.read_text())
        toml.chmod(0o644)
        override = directory / "override.yml"
        override.write_text(yaml.safe_dump(
            {"services": {"bridge": {"volumes": [f"{configs}:/etc/bridge:ro"]}}}))
        token = secrets.token_hex(16)
        environ = {**os.environ, "BRIDGE_TOKEN": token, "BRIDGE_HOST_PORT": ""}
        project = f"bridgect{os.getpid()}reload"
        base = [*self.compose, "-p", project, "-f", str(COMPOSE), "-f", str(override)]

        def compose(*args: str) -> str:
            result = subprocess.run([*base, *args], env=environ, capture_output=True,
                                    text=True, timeout=1800)
            self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-3000:])
            return result.stdout.strip()

        self.addCleanup(subprocess.run, [*base, "down", "-v", "--remove-orphans"],
                        env=environ, capture_output=True, timeout=300)
        compose("up", "--build", "-d", "bridge")
        address = compose("port", "bridge", "8080").splitlines()[-1]

        def status() -> dict[str, Any]:
            request = urllib.request.Request(f"http://{address}/status",
                                             headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    return dict(json.loads(answer.read()))
            except OSError:
                return {}

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        poll(ready, "GET /readyz to answer 200: both upstreams connected")
        before = status()
        self.assertEqual(list(before["upstreams"]), ["redis", "cache"])
        self.assertEqual(before["configuration"]["generation"], 1)

        edited = toml.with_suffix(".new")
        edited.write_text(toml.read_text()
                          + '\n[upstreams.logs]\nupstream = "redis:6379"\nrequired = false\n')
        edited.chmod(0o644)
        edited.replace(toml)
        compose("kill", "-s", "HUP", "bridge")
        poll(lambda: status().get("configuration", {}).get("generation") == 2,
             "configuration generation 2")
        after = status()
        self.assertEqual(list(after["upstreams"]), ["redis", "cache", "logs"])
        for name in ("redis", "cache"):  # unchanged: the same connection
            self.assertEqual(after["upstreams"][name]["counters"]["connects"], 1)
            self.assertEqual(after["upstreams"][name]["counters"]["disconnects"], 0)


class KubernetesPodInDockerTests(unittest.TestCase):
    """The sidecar pod of config/kubernetes/, reproduced with Docker (no
    cluster here): the Services redis and memcached as network aliases, the
    bridge container with the ConfigMap's environment and the mounted
    ConfigMap and Secret files, read-only, as the pod's user; the app
    container in the bridge container's network namespace, as in a pod, with
    the manifest's own command. Its first lines must be the README's."""

    def setUp(self) -> None:
        reason = docker_unavailable()
        if reason:
            self.skipTest(reason)
        self.name = f"bridge-pod-{os.getpid()}"
        self.containers: list[str] = []
        self.addCleanup(self.cleanup)

    def cleanup(self) -> None:
        for container in reversed(self.containers):
            subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True,
                           timeout=120)
        subprocess.run(["docker", "network", "rm", self.name], capture_output=True, timeout=60)

    def run_container(self, suffix: str, *args: str) -> str:
        name = f"{self.name}-{suffix}"
        self.containers.append(name)
        docker_cli("run", "-d", "--name", name, *args)
        return name

    def files(self, data: dict[str, str], mode: int) -> str:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        os.chmod(directory, 0o755)
        for key, text in data.items():
            path = Path(directory) / key
            path.write_text(text)
            path.chmod(mode)
        return directory

    def test_the_app_gets_its_answers_through_the_sidecar(self) -> None:
        deployment = find("Deployment", "example-app")
        pod = deployment["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        bridge, app = containers["bridge"], containers["app"]
        image = bridge["image"]
        self.assertEqual(app["image"], image)
        docker_cli("build", "-q", "-t", image, str(REPO), timeout=1800)
        upstream_images = {"redis": "bridge-example/redis", "memcached": "bridge-example/memcached"}
        for service, tag in upstream_images.items():
            docker_cli("build", "-q", "-t", tag, str(REPO / "docker" / service), timeout=1800)

        docker_cli("network", "create", self.name)
        for service, tag in upstream_images.items():
            self.run_container(service, "--network", self.name, "--network-alias", service, tag)

        token = secrets.token_hex(16)
        volumes = {v["name"]: v for v in pod["volumes"]}

        def mounts(container: dict[str, Any]) -> list[str]:
            args = []
            for mount in container["volumeMounts"]:
                volume = volumes[mount["name"]]
                if "emptyDir" in volume:
                    args += ["--tmpfs", mount["mountPath"]]
                    continue
                if "secret" in volume:
                    self.assertEqual(volume["secret"]["secretName"], "bridge-token")
                    source = self.files({"token": token}, 0o444)
                else:
                    data = find("ConfigMap", volume["configMap"]["name"])["data"]
                    source = self.files(data, 0o444)
                args += ["-v", f"{source}:{mount['mountPath']}:ro"]
            return args

        def user(container: dict[str, Any]) -> str:
            context = {**pod["securityContext"], **container["securityContext"]}
            return f"{context.get('runAsUser', 10001)}:{context.get('runAsGroup', 10001)}"

        settings = find("ConfigMap", bridge["envFrom"][0]["configMapRef"]["name"])["data"]
        environment = [item for key, value in settings.items() for item in ("-e", f"{key}={value}")]
        port = bridge["ports"][0]["containerPort"]
        sidecar = self.run_container(
            "bridge", "--network", self.name, "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--user", user(bridge),
            "-p", f"127.0.0.1::{port}", *environment, *mounts(bridge), image)
        address = docker_cli("port", sidecar, f"{port}/tcp").splitlines()[0]

        def probe(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://{address}{path}", timeout=2) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as error:
                return error.code
            except OSError:
                return 0

        # The readiness probe: both upstreams connected.
        readiness = bridge["readinessProbe"]["httpGet"]["path"]
        poll(lambda: probe(readiness) == 200, f"GET {readiness} to answer 200")
        self.assertEqual(probe(bridge["livenessProbe"]["httpGet"]["path"]), 200)
        self.assertEqual(probe("/u/cache/readyz"), 200)

        command = [*app["command"], *app["args"]]
        runner = self.run_container(
            "app", "--network", f"container:{sidecar}", "--read-only", "--cap-drop", "ALL",
            "--user", user(app), *mounts(app), "--entrypoint", command[0], image, *command[1:])

        def app_lines() -> list[str]:
            return docker_cli("logs", runner).splitlines()

        poll(lambda: len(app_lines()) >= 2, "the app's first two lines", 60)
        self.assertEqual(app_lines()[:2], [
            '/u/redis/request 200 {"replies": [1]}',
            '/u/cache/request 200 {"replies": [["STORED"]]}'])
        readme = README.read_text()
        self.assertIn('```\n/u/redis/request 200 {"replies": [1]}\n'
                      '/u/cache/request 200 {"replies": [["STORED"]]}\n```', readme)
