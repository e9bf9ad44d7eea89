"""GET /openapi.json: a valid OpenAPI 3.1 document (checked by
openapi-spec-validator) that lists exactly the routes the bridge serves, and
whose status codes are the ones the bridge really answers."""

from __future__ import annotations

import json
import re
from typing import Any

from openapi_spec_validator import validate
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.http import openapi
from bridge.http.routes import ROUTES, RouteTable, served_routes
from tests.http_harness import TOKEN, HarnessTestCase, auth

CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "token": {"token": TOKEN},
    "token, open metrics": {"token": TOKEN, "metrics_auth": False},
    "no ui": {"ui": False},
}
METHODS = {"get", "head", "post", "put", "delete", "patch", "options", "trace"}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path template) of every operation in ``document``."""
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in METHODS}


def example_path(template: str, config: Config) -> str:
    """A concrete path for a template: a configured upstream for {upstream}."""
    name = next(iter(config.upstreams))
    return re.sub(r"\{([^}]+)\}", lambda m: name if m.group(1) == "upstream" else "x", template)


class DocumentTests(SynchronousTestCase):
    def test_valid_openapi_3_1(self) -> None:
        for name, values in CONFIGS.items():
            with self.subTest(config=name):
                config = Config().with_values(**values)
                document = openapi.document(config, served_routes(config.ui))
                validate(document)
                self.assertEqual(document["openapi"], "3.1.0")

    def test_the_served_routes_and_the_document_agree_both_ways(self) -> None:
        for name, values in CONFIGS.items():
            with self.subTest(config=name):
                config = Config().with_values(**values)
                routes = served_routes(config.ui)
                document = openapi.document(config, routes)
                served = {(method.decode(), openapi.openapi_path(route)[0])
                          for route in routes for method in route.methods}
                self.assertEqual(operations(document), served)
                # And each documented operation is a hit in the table the
                # channel decides requests with (not a 404 or 405).
                table = RouteTable(routes)
                for method, path in operations(document):
                    decision = table.decide(method.encode(), example_path(path, config).encode())
                    self.assertIsNotNone(decision.route, (method, path, decision.miss))

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
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                self.assertEqual(schema, {"$ref": "#/components/schemas/Error"})
            self.assertIn("Retry-After", operation["responses"]["503"]["headers"])
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
        open_paths = {"/healthz", "/readyz", "/metrics", "/", "/ui/app.js", "/ui/app.css",
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
        """A route with a parameter (/u/{upstream}/send) gets it as a path
        parameter, with the configured upstreams as its values, and a 404."""
        from dataclasses import replace

        send = next(route for route in ROUTES if route.handler == "send")
        routes = (replace(send, path=b"/u/{upstream}/send"),
                  replace(send, path=b"/u/<upstream>/request", handler="request"))
        config = Config().with_values(upstream=("cache=127.0.0.1:1", "queue=127.0.0.1:2"))
        document = openapi.document(config, routes)
        validate(document)
        self.assertEqual(set(document["paths"]), {"/u/{upstream}/send", "/u/{upstream}/request"})
        for item in document["paths"].values():
            operation = item["post"]
            parameter = operation["parameters"][0]
            self.assertEqual(parameter["in"], "path")
            self.assertEqual(parameter["schema"]["enum"], sorted(config.upstreams))
            self.assertIn("unknown_upstream", operation["responses"]["404"]["description"])


class ServedDocumentTests(HarnessTestCase):
    def test_the_bridge_serves_the_document_of_its_config(self) -> None:
        for name, values in CONFIGS.items():
            with self.subTest(config=name):
                harness = self.harness(**values)
                response = harness.call("GET", "/openapi.json", headers=auth())
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
                if path == "/request":
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
