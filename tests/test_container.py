"""The container and orchestration files agree with the Kubernetes schemas and
with the bridge itself; and the image works (`make container-test`, when a
Docker daemon is reachable; BRIDGE_CONTAINER_TEST=0 skips it).

Checked against the code, not against copies of it: the settings table
(:data:`bridge.config.SETTINGS`), the routes of :data:`bridge.http.routes.ROUTES`
and ``bridge healthcheck``'s default URL.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

from bridge.app import healthcheck
from bridge.config import SETTINGS, SETTINGS_BY_NAME, Config, ConfigError, load
from bridge.http.routes import ROUTES as ROUTE_TABLE

REPO = Path(__file__).resolve().parent.parent
KUBERNETES = REPO / "config" / "kubernetes"
COMPOSE = REPO / "config" / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

# Oldest Kubernetes the examples are meant for, and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
SETTING_ENVS = {setting.env for setting in SETTINGS}
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
        unknown = set(self.settings) - SETTING_ENVS - {"BRIDGE_CONFIG"}
        self.assertEqual(unknown, set(), "ConfigMap keys the bridge does not know")
        environ = dict(self.settings)
        token_file = environ.pop("BRIDGE_TOKEN_FILE")
        environ["BRIDGE_TOKEN"] = "from-the-secret"  # what load() reads from token_file
        # The upstreams' file: another ConfigMap's key, mounted where BRIDGE_CONFIG says.
        path = environ.pop("BRIDGE_CONFIG")
        mounts = {m["mountPath"]: m["name"] for m in self.bridge["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        source = volumes[mounts[os.path.dirname(path)]]["configMap"]["name"]
        text = find("ConfigMap", source)["data"][os.path.basename(path)]
        with tempfile.TemporaryDirectory() as directory:
            copy_path = os.path.join(directory, "bridge.toml")
            Path(copy_path).write_text(text)
            try:
                config = load({}, environ, copy_path)
            except ConfigError as error:  # pragma: no cover - the message is the point
                self.fail(f"the ConfigMaps are not a valid configuration: {error}")
        self.assertEqual(config.token, "from-the-secret")
        self.assertEqual({name: (upstream.upstream, upstream.reply_framing)
                          for name, upstream in config.upstreams.items()},
                         {"redis": ("redis:6379", "resp")})
        mounts = {m["mountPath"]: m["name"] for m in self.bridge["volumeMounts"]}
        directory = os.path.dirname(token_file)
        self.assertIn(directory, mounts, "BRIDGE_TOKEN_FILE is not on a mounted volume")
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        secret = volumes[mounts[directory]]["secret"]
        self.assertEqual(secret["secretName"], "bridge-token")
        self.assertEqual(self.pod["securityContext"]["fsGroup"], 10001)

    def test_the_app_talks_to_the_bridge_on_loopback(self) -> None:
        script = "\n".join(self.app["args"])
        self.assertIn(f"http://127.0.0.1:{DEFAULT_PORT}/u/redis/send", script)
        self.assertIn("/u/{upstream}/send", ROUTES)
        self.assertIn("/var/run/secrets/bridge/token", script)

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
    def setUp(self) -> None:
        self.services = yaml.safe_load(COMPOSE.read_text())["services"]
        self.bridge = self.services["bridge"]

    def test_readiness_gates_the_client(self) -> None:
        self.assertEqual(self.bridge["healthcheck"]["test"][:4],
                         ["CMD", "bridge", "healthcheck", "--ready"])
        self.assertEqual(self.services["client"]["depends_on"]["bridge"]["condition"],
                         "service_healthy")
        self.assertEqual(self.bridge["depends_on"]["redis"]["condition"], "service_healthy")

    def test_the_client_uses_send_and_request_with_the_token(self) -> None:
        script = "\n".join(self.services["client"]["command"])
        for route in ("send", "request"):
            self.assertIn(f"/u/{{upstream}}/{route}", ROUTES)
            self.assertIn(f"http://bridge:{DEFAULT_PORT}/u/redis/{route}", script)
        self.assertIn("Authorization: Bearer $$BRIDGE_TOKEN", script)

    def test_the_upstreams_file_names_redis(self) -> None:
        environment = dict(self.bridge["environment"])
        mounts = dict(volume.rsplit(":", 1)[0].split(":", 1)[::-1]
                      for volume in self.bridge["volumes"])
        source = COMPOSE.parent / mounts[environment.pop("BRIDGE_CONFIG")]
        self.assertTrue(self.bridge["volumes"][0].endswith(":ro"))
        environment["BRIDGE_TOKEN"] = "from-the-environment"
        config = load({}, environment, str(source))
        self.assertEqual({name: (upstream.upstream, upstream.reply_framing)
                          for name, upstream in config.upstreams.items()},
                         {"redis": ("redis:6379", "resp")})
        self.assertEqual(self.bridge["depends_on"], {"redis": {"condition": "service_healthy"}})

    def test_bridge_settings_port_and_lockdown(self) -> None:
        environment = self.bridge["environment"]
        self.assertEqual(set(environment) - SETTING_ENVS, {"BRIDGE_CONFIG"})
        self.assertIn("BRIDGE_TOKEN", environment)
        self.assertEqual(self.bridge["ports"], [f"127.0.0.1:{DEFAULT_PORT}:{DEFAULT_PORT}"])
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
