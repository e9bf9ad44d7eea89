"""GET /openapi.json: a valid OpenAPI 3.1 document (checked by
openapi-spec-validator) that lists exactly the routes the bridge serves, and
whose status codes are the ones the bridge really answers."""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

from openapi_spec_validator import validate
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config, load
from bridge.http import openapi
from bridge.http.routes import ROUTES, RouteTable, served_routes
from tests.http_harness import TOKEN, HarnessTestCase, auth
from tests.test_upstreams_http import ADMIN, SCOPED, three_upstreams

CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "token": {"token": TOKEN},
    "open metrics, one token": {"token": TOKEN, "metrics_auth": False},
    "no ui": {"ui": False},
}


def configs() -> dict[str, Config]:
    """The configurations the document is checked in: one upstream (with and
    without token, page), several upstreams, scoped tokens, no upstream named
    default."""
    result = {name: Config().with_values(**values) for name, values in CONFIGS.items()}
    result["several upstreams"] = three_upstreams()
    result["scoped tokens"] = three_upstreams(SCOPED, top=ADMIN)
    result["no default upstream"] = no_default_upstream()
    return result


def no_default_upstream() -> Config:
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "bridge.toml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('[upstreams.cache]\nupstream = "tcp:127.0.0.1:7001"\n')
    try:
        return load({}, {}, path)
    finally:
        os.unlink(path)
        os.rmdir(directory)


METHODS = {"get", "head", "post", "put", "delete", "patch", "options", "trace"}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path template) of every operation in ``document``."""
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in METHODS}


def answer(document: dict[str, Any], operation: dict[str, Any], code: str) -> dict[str, Any]:
    """An operation's response for ``code``, its reference resolved."""
    response: dict[str, Any] = operation["responses"][code]
    if "$ref" in response:
        prefix = "#/components/responses/"
        self_ref = response["$ref"]
        assert self_ref.startswith(prefix), self_ref
        response = document["components"]["responses"][self_ref[len(prefix):]]
    return response


def example_path(template: str, config: Config, name: str | None = None) -> str:
    """A concrete path for a template: a configured upstream for {upstream}
    (``name``, or the first one)."""
    name = name or next(iter(config.upstreams))
    return re.sub(r"\{([^}]+)\}", lambda m: name if m.group(1) == "upstream" else "x", template)


class DocumentTests(SynchronousTestCase):
    def test_valid_openapi_3_1(self) -> None:
        # The validator takes about a second a document: the configurations
        # that make the documents differ most (the others differ from these
        # only in which operations say 401).
        chosen = ("defaults", "no ui", "scoped tokens", "open metrics, one token",
                  "no default upstream")
        every = configs()
        for name in chosen:
            config = every[name]
            with self.subTest(config=name):
                document = openapi.document(config, served_routes(config.ui))
                validate(document)
                self.assertEqual(document["openapi"], "3.1.0")

    def test_the_served_routes_and_the_document_agree_both_ways(self) -> None:
        for name, config in configs().items():
            with self.subTest(config=name):
                routes = served_routes(config.ui)
                document = openapi.document(config, routes)
                served = {(method.decode(), openapi.openapi_path(route)[0])
                          for route in routes for method in route.methods}
                self.assertEqual(operations(document), served)
                # And each documented operation is a hit in the table the
                # channel decides requests with (not a 404 or 405).
                table = RouteTable(routes, upstreams=tuple(config.upstreams))
                for method, path in operations(document):
                    for name in config.upstreams:
                        concrete = example_path(path, config, name).encode()
                        decision = table.decide(method.encode(), concrete)
                        self.assertIsNotNone(decision.route, (method, path, decision.miss))
                        self.assertEqual(decision.label, path)

    def test_no_ui_leaves_the_page_files_out(self) -> None:
        config = Config().with_values(ui=False)
        paths = set(openapi.document(config, served_routes(False))["paths"])
        self.assertEqual({p for p in paths if p.startswith("/ui/")}, set())
        self.assertIn("/", paths)
        self.assertIn("/ui/app.js", openapi.document(Config(), served_routes())["paths"])

    def test_every_route_is_described(self) -> None:
        for route in ROUTES:
            with self.subTest(route=route.label):
                self.assertIn(route.handler, openapi.OPERATIONS,
                              "describe this route's handler in bridge.http.openapi.OPERATIONS")

    def test_bodies_query_and_errors(self) -> None:
        document = openapi.document(Config(), served_routes())
        for path, query in (("/send", {"confirm", "timeout"}),
                            ("/request", {"timeout", "replies"})):
            operation = document["paths"][path]["post"]
            self.assertEqual(set(operation["requestBody"]["content"]),
                             {"text/plain", "application/json"})
            self.assertEqual({p["name"] for p in operation["parameters"]
                              if p["in"] == "query"}, query)
            for code in ("400", "413", "415", "429", "503"):
                schema = answer(document, operation, code)["content"]["application/json"]["schema"]
                self.assertEqual(schema, {"$ref": "#/components/schemas/Error"})
            self.assertIn("Retry-After", answer(document, operation, "503")["headers"])
        self.assertEqual(set(document["paths"]["/request"]["post"]["responses"]),
                         {"200", "400", "408", "413", "415", "429", "431", "500", "502", "503",
                          "504"})
        self.assertEqual(document["components"]["schemas"]["Error"]["required"],
                         ["error", "message"])
        self.assertNotIn("securitySchemes", document["components"])
        self.assertNotIn("security", document)

    def test_bearer_scheme_when_a_token_is_set(self) -> None:
        config = Config().with_values(token=TOKEN, metrics_auth=False)
        document = openapi.document(config, served_routes())
        self.assertEqual(document["components"]["securitySchemes"]["bearer"],
                         {"type": "http", "scheme": "bearer", "description": (
                             "the bridge's token (token, token_file or a scoped token)")})
        self.assertEqual(document["security"], [{"bearer": []}])
        open_paths = {"/healthz", "/readyz", "/u/{upstream}/readyz", "/metrics", "/",
                      "/ui/app.js", "/ui/app.css",
                      "/ui/favicon.svg"}
        for path, item in document["paths"].items():
            for method, operation in item.items():
                with self.subTest(path=path, method=method):
                    if path in open_paths:
                        self.assertEqual(operation["security"], [])
                        self.assertNotIn("401", operation["responses"])
                    else:
                        self.assertNotIn("security", operation)
                        self.assertIn("401", operation["responses"])
        self.assertNotIn(TOKEN, json.dumps(document))

    def test_path_parameters(self) -> None:
        """/u/{upstream}/... routes get the upstream as a path parameter, with
        the configured names as its values, and a 404 unknown_upstream."""
        config = three_upstreams()
        document = openapi.document(config, served_routes())
        templated = {path for path in document["paths"] if "{" in path}
        self.assertEqual(templated, {"/u/{upstream}/send", "/u/{upstream}/request",
                                     "/u/{upstream}/events", "/u/{upstream}/readyz"})
        for path in templated:
            for method, operation in document["paths"][path].items():
                with self.subTest(path=path, method=method):
                    parameter = operation["parameters"][0]
                    self.assertEqual((parameter["name"], parameter["in"], parameter["required"]),
                                     ("upstream", "path", True))
                    self.assertEqual(parameter["schema"]["enum"], ["cache", "default", "logs"])
                    self.assertIn("unknown_upstream",
                                  answer(document, operation, "404")["description"])
        send = document["paths"]["/u/{upstream}/send"]["post"]
        self.assertEqual({p["name"] for p in send["parameters"]},
                         {"upstream", "confirm", "timeout"})
        self.assertTrue(send["description"].startswith("Addresses the upstream named in the "
                                                       "path."))
        self.assertTrue(document["paths"]["/send"]["post"]["description"].startswith(
            "Addresses the upstream named default."))
        # /send always finds the upstream named default here: no 404 for it.
        self.assertNotIn("404", document["paths"]["/send"]["post"]["responses"])

    def test_without_an_upstream_named_default(self) -> None:
        document = openapi.document(no_default_upstream(), served_routes())
        for path in ("/send", "/request", "/events"):
            with self.subTest(path=path):
                operation = next(iter(document["paths"][path].values()))
                self.assertIn("unknown_upstream", answer(document, operation, "404")["description"])
        self.assertEqual(
            document["paths"]["/u/{upstream}/send"]["post"]["parameters"][0]["schema"]["enum"],
            ["cache"])

    def test_scoped_tokens_add_403(self) -> None:
        document = openapi.document(three_upstreams(SCOPED, top=ADMIN), served_routes())
        for path, item in document["paths"].items():
            for method, operation in item.items():
                with self.subTest(path=path, method=method):
                    secured = "security" not in operation
                    self.assertEqual("403" in operation["responses"], secured)
                    self.assertEqual("401" in operation["responses"], secured)
        self.assertNotIn("admin-token", json.dumps(document))
        self.assertNotIn("app-token", json.dumps(document))


class ServedDocumentTests(HarnessTestCase):
    def test_the_bridge_serves_the_document_of_its_config(self) -> None:
        for name, config in configs().items():
            with self.subTest(config=name):
                harness = self.harness(connect=0, config=config)
                response = harness.call("GET", "/openapi.json",
                                        headers=auth("admin-token" if config.scoped_tokens
                                                     else TOKEN))
                self.assertEqual((response.status, response.header(b"Content-Type")),
                                 (200, b"application/json"))
                config = harness.config
                self.assertEqual(response.json(),
                                 openapi.document(config, served_routes(config.ui)))

    def test_every_documented_operation_answers_a_documented_status(self) -> None:
        """Each operation, really called on the in-memory bridge (with its
        example body where it takes one), answers one of its documented codes."""
        harness = self.harness(token=TOKEN)
        document = harness.call("GET", "/openapi.json", headers=auth()).json()
        for method, path in sorted(operations(document)):
            operation = document["paths"][path][method.lower()]
            body = None
            if "requestBody" in operation:
                body = operation["requestBody"]["content"]["text/plain"]["example"].encode()
            with self.subTest(method=method, path=path):
                client = harness.start(method, example_path(path, harness.config), body,
                                       auth())
                if path.endswith("/request"):
                    harness.upstream.peer_sends(b"OK\r\nOK\r\n")
                status_line = client.transport.value().split(b"\r\n", 1)[0]
                status = status_line.split(b" ")[1].decode()
                self.assertIn(status, operation["responses"], status_line)
                self.assertTrue(status.startswith("2"), status_line)
                # And without the token: 401 exactly where documented.
                bare = harness.start(method, example_path(path, harness.config), body)
                bare_status = bare.transport.value().split(b" ", 2)[1].decode()
                self.assertIn(bare_status, operation["responses"])
                self.assertEqual(bare_status == "401", "401" in operation["responses"])

    def test_scoped_token_answers_are_documented(self) -> None:
        """A scoped token (send and request on cache only): every operation
        answers a documented status, 403 for the ones it does not open."""
        harness = self.harness(connect=0, config=three_upstreams(SCOPED, top=ADMIN))
        upstreams = {name: harness.connect_upstream(port)
                     for name, port in (("default", 7000), ("cache", 7001), ("logs", 7002))}
        document = harness.call("GET", "/openapi.json", headers=auth("admin-token")).json()
        seen = set()
        for method, path in sorted(operations(document)):
            operation = document["paths"][path][method.lower()]
            body = None
            if "requestBody" in operation:
                body = operation["requestBody"]["content"]["text/plain"]["example"].encode()
            for name in harness.config.upstreams:
                concrete = example_path(path, harness.config, name)
                with self.subTest(method=method, path=concrete):
                    client = harness.start(method, concrete, body, auth("app-token"))
                    if not client.transport.value():  # a /request waits for its replies
                        upstreams[name].peer_sends(b"OK\r\nOK\r\n")
                    status = client.transport.value().split(b" ", 2)[1].decode()
                    self.assertIn(status, operation["responses"])
                    seen.add((method, concrete, status))
        self.assertIn(("POST", "/u/cache/send", "202"), seen)
        self.assertIn(("POST", "/u/cache/request", "200"), seen)
        self.assertIn(("POST", "/u/default/send", "403"), seen)
        self.assertIn(("GET", "/status", "403"), seen)

    def test_a_reload_changes_the_document(self) -> None:
        harness = self.harness(connect=0, config=three_upstreams())
        before = harness.call("GET", "/openapi.json").json()
        self.assertEqual(
            before["paths"]["/u/{upstream}/send"]["post"]["parameters"][0]["schema"]["enum"],
            ["cache", "default", "logs"])
        new = three_upstreams("""
            [upstreams.metrics]
            upstream = "tcp:127.0.0.1:7003"
        """, top='token = "new-admin"\n')
        harness.service.reconfigure(new)
        self.assertEqual(harness.call("GET", "/openapi.json").status, 401)
        after = harness.call("GET", "/openapi.json", headers=auth("new-admin")).json()
        self.assertEqual(
            after["paths"]["/u/{upstream}/send"]["post"]["parameters"][0]["schema"]["enum"],
            ["cache", "default", "logs", "metrics"])
        self.assertEqual(after["security"], [{"bearer": []}])
        self.assertEqual(after, openapi.document(harness.service.config, served_routes()))
