"""The OpenAPI 3.1 description of the routes a bridge serves, and the JSON
index of them that ``GET /`` gives clients that are not browsers.

Both are generated from the route table (:data:`bridge.http.routes.ROUTES`,
filtered by :func:`bridge.http.routes.served_routes`): a route added there
appears here by itself.  What a route means (summary, body, query, answers)
is :data:`OPERATIONS`, keyed by the route's handler, so routes that share a
handler share a description; a path parameter (``/u/{upstream}/send``, or
Klein's ``<upstream>``) becomes an OpenAPI path parameter, with the
configured upstream names as its values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bridge import __version__
from bridge.config import Config
from bridge.http.page import ASSETS
from bridge.http.routes import Route

JSON = "application/json"
_PARAMETER = re.compile(r"[{<](?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)[}>]")


@dataclass(frozen=True)
class Answer:
    """One status code of an operation: what it means and its body."""

    description: str
    content: dict[str, Any] | None = None  # media type -> schema
    codes: tuple[str, ...] = ()  # the "error" values this status carries
    retry_after: bool = False
    #: Shared answers are written once, in components/responses, and
    #: referred to by this name (a document a third the size).
    name: str | None = None


@dataclass(frozen=True)
class Operation:
    """What one handler does, for the OpenAPI document and the route index."""

    summary: str
    description: str = ""
    lines_body: bool = False  # takes lines: a text body or {"lines": [...]}
    query: tuple[str, ...] = ()  # names in QUERY
    answers: dict[int, Answer] = field(default_factory=dict)
    tag: str = "api"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: schema}


def _error(name: str, description: str, *codes: str, retry_after: bool = False,
           schema: str = "Error") -> Answer:
    return Answer(description, _json(_ref(schema)), codes, retry_after, name)


# Answers every route may give: the channel refuses these before any handler runs.
COMMON: dict[int, Answer] = {
    400: _error("BadRequest",
                "not valid HTTP/1.1, or a request target that is not a path (the connection "
                "closes); for /send and /request also a body or query that breaks the rules "
                "(nothing was sent)", "bad_request", "invalid_target"),
    408: _error("RequestTimeout",
                "the whole request did not arrive within request_timeout (the connection "
                "closes)", "request_timeout"),
    413: _error("TooLarge", "a body over max_body_bytes, or a line over max_line_bytes",
                "body_too_large", "line_too_long"),
    431: _error("HeaderTooLarge",
                "request line and header fields over 16 KiB (the connection closes)",
                "header_too_large"),
    500: _error("InternalError", "an internal error (see the bridge's log)", "internal_error"),
}
UNAUTHORIZED = _error("Unauthorized",
                      "a token is set and the request lacks 'Authorization: Bearer <token>' "
                      "(or has a token the bridge does not know)", "unauthorized")
FORBIDDEN = _error("Forbidden",
                   "a scoped token that does not allow this route (or this upstream)",
                   "forbidden")
UNKNOWN_UPSTREAM = _error("UnknownUpstream", "no upstream of this name is configured",
                          "unknown_upstream")
NO_DEFAULT = _error("NoDefaultUpstream",
                    "no upstream is named default: address one as /u/{upstream}/...",
                    "unknown_upstream")

BODY_ERRORS = ("empty_body", "bare_cr", "invalid_json", "invalid_lines", "invalid_command",
               "invalid_timeout", "invalid_replies", "invalid_confirm", "confirm_unavailable",
               "bad_request", "invalid_target")
WORK_ANSWERS: dict[int, Answer] = {
    400: _error("InvalidLines",
                "the body or query breaks the rules, or the upstream would misread a line: "
                "nothing was sent (or not valid HTTP: the connection closes)", *BODY_ERRORS),
    415: _error("UnsupportedMediaType", "a multipart/* body (the connection closes)",
                "unsupported_media_type"),
    429: _error("Busy", "busy: retry after Retry-After seconds", "overloaded",
                "upstream_congested", "too_many_pending", retry_after=True),
    503: _error("Unavailable",
                "no live connection to the upstream (Retry-After: seconds until the next "
                "attempt), or the bridge is shutting down; nothing was sent",
                "upstream_unavailable", "shutting_down", retry_after=True),
}
#: /send with spool = "disk" (issue 12) refuses with these too.
SPOOL_ANSWERS: dict[int, Answer] = {
    429: _error("SendBusy", "busy, or (with a spool) the spool holds spool_max_bytes: retry "
                "after Retry-After seconds; nothing was stored", "overloaded",
                "upstream_congested", "too_many_pending", "spool_full", retry_after=True),
    503: _error("SendUnavailable",
                "no live connection to the upstream (Retry-After: seconds until the next "
                "attempt), or the bridge is shutting down, or (with a spool) the disk refused "
                "the lines; nothing was sent or stored",
                "upstream_unavailable", "shutting_down", "spool_unavailable", retry_after=True),
}
WAIT_ANSWERS: dict[int, Answer] = {
    502: _error("UpstreamLost",
                "the connection dropped (or was closed as out of step) while waiting, or a "
                "reply is an error reply; the replies so far are in 'replies'",
                "upstream_lost", "upstream_error", schema="ReplyError"),
    504: _error("ReplyTimeout",
                "not every reply arrived within the timeout; the replies so far are in "
                "'replies'", "reply_timeout", schema="ReplyError"),
}

QUERY: dict[str, dict[str, Any]] = {
    "timeout": {
        "name": "timeout", "in": "query", "required": False,
        "description": "seconds to wait for the replies (default reply_timeout, at most "
                       "max_reply_timeout); for /send only with confirm",
        "schema": {"type": "number", "exclusiveMinimum": 0},
    },
    "replies": {
        "name": "replies", "in": "query", "required": False,
        "description": "how many replies the whole request gets, in the upstream's framing, "
                       "when you know better than the framing",
        "schema": {"type": "integer", "minimum": 0, "maximum": 100000},
    },
    "confirm": {
        "name": "confirm", "in": "query", "required": False,
        "description": "wait until the upstream answered every line (true, 1, yes or false, "
                       "0, no)",
        "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
    },
}

OPERATIONS: dict[str, Operation] = {
    "send": Operation(
        "Write lines to the upstream",
        "A text body is split on LF (a CR right before it is dropped); a JSON body is "
        '{"lines": [...]}.  202 means the lines were written to a live connection; with '
        "?confirm=true the answer waits for the upstream's answers to every line.  With "
        'spool = "disk" 202 means the lines are stored in the spool, connected or not, '
        '("spooled": true) and they are delivered later.',
        lines_body=True, query=("confirm", "timeout"), tag="lines",
        answers={
            202: Answer("the lines were written to a live connection (or stored in the "
                        "upstream's spool)", _json(_ref("Sent"))),
            200: Answer("(with confirm) the upstream answered every line; error replies are "
                        "listed", _json(_ref("Confirmed"))),
            **WORK_ANSWERS, **WAIT_ANSWERS, **SPOOL_ANSWERS,
        },
    ),
    "request": Operation(
        "Write lines and return the upstream's replies",
        "The lines go out on one connection; the replies are read the way the upstream "
        "frames them (reply_framing) and matched in order.",
        lines_body=True, query=("timeout", "replies"), tag="lines",
        answers={
            200: Answer("every reply, one per command (text/plain: the replies' bytes as "
                        "received, for a client that asks for it with Accept)",
                        {JSON: _ref("Replies"), "text/plain": {"type": "string"}}),
            **WORK_ANSWERS, **WAIT_ANSWERS,
        },
    ),
    "healthz": Operation(
        "Liveness: the process serves requests", tag="probes",
        answers={200: Answer("alive", _json(_ref("Health")))},
    ),
    "readyz": Operation(
        "Readiness: every required upstream is connected", tag="probes",
        description="With several upstreams, the document is the first one not ready (or "
                    "the first one), plus 'upstreams' with one entry each.",
        answers={
            200: Answer("ready", _json(_ref("Readiness"))),
            503: Answer("not ready (a required upstream not connected, or shutting down)",
                        _json(_ref("Readiness"))),
        },
    ),
    "upstream_readyz": Operation(
        "Readiness of one upstream", tag="probes",
        answers={
            200: Answer("this upstream is connected", _json(_ref("Readiness"))),
            503: Answer("not ready (not connected, or shutting down)",
                        _json(_ref("Readiness"))),
        },
    ),
    "status": Operation(
        "What the bridge and its upstream(s) are doing",
        "Connection state, addresses, retry timing, counters, pool members.",
        tag="status", answers={200: Answer("the status", _json(_ref("Status")))},
    ),
    "metrics_page": Operation(
        "Prometheus metrics", tag="status",
        answers={200: Answer("metrics in the Prometheus text format",
                             {"text/plain": {"type": "string"}})},
    ),
    "events_stream": Operation(
        "Server-Sent Events: what the upstream says unasked",
        "Unsolicited replies, late replies, /send error replies and subscribed messages as "
        "they arrive.  Last-Event-ID resumes after an event that is still kept.",
        tag="status",
        answers={200: Answer("an endless event stream", {"text/event-stream": {"type": "string"}})},
    ),
    "openapi_json": Operation(
        "This OpenAPI document", tag="meta",
        answers={200: Answer("the OpenAPI 3.1 document", _json({"type": "object"}))},
    ),
    "index": Operation(
        "The status page for a browser (Accept: text/html), else this index of the routes",
        tag="meta",
        answers={200: Answer("the page (text/html) or the route index",
                             {"text/html": {"type": "string"}, JSON: _ref("RouteIndex")})},
    ),
    "asset": Operation(
        "A file of the status page", tag="meta",
        answers={200: Answer("the file")},  # its Content-Type: see _answers
    ),
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "a stable code, e.g. upstream_unavailable"},
            "message": {"type": "string", "description": "what happened, for a person"},
        },
        "additionalProperties": True,
    },
    "ReplyError": {
        "allOf": [_ref("Error"), {
            "type": "object",
            "properties": {"replies": {"type": "array", "items": {},
                                       "description": "the replies received so far"}},
        }],
    },
    "Lines": {
        "type": "object",
        "required": ["lines"],
        "properties": {"lines": {"type": "array", "items": {"type": "string"},
                                 "description": "lines without CR or LF"}},
    },
    "Sent": {
        "type": "object", "required": ["sent"],
        "properties": {"sent": {"type": "integer", "minimum": 0},
                       "spooled": {"type": "boolean",
                                   "description": "stored in the spool (spool = disk)"}},
    },
    "Confirmed": {
        "type": "object", "required": ["sent", "errors"],
        "properties": {
            "sent": {"type": "integer", "minimum": 0},
            "errors": {"type": "array", "items": {
                "type": "object",
                "properties": {"line": {"type": "integer"}, "reply": {}},
            }},
        },
    },
    "Replies": {
        "type": "object", "required": ["replies"],
        "properties": {"replies": {"type": "array", "items": {},
                                   "description": "one reply per command, in the JSON form "
                                                  "of the upstream's framing"}},
    },
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "Readiness": {
        "type": "object", "required": ["ready", "state"],
        "properties": {
            "ready": {"type": "boolean"},
            "upstream": {"type": "string", "description":
                         "with several upstreams: the one whose state the document shows "
                         "(the first not ready, else the first)"},
            "state": {"type": "string"},
            "retry_in": {"type": ["number", "null"]},
            "connected": {"type": "integer"},
            "pool_size": {"type": "integer"},
            "upstreams": {"type": "object", "description":
                          "with several upstreams: the readiness of each, by name"},
        },
        "additionalProperties": True,
    },
    "Status": {
        "type": "object",
        "properties": {
            "version": {"type": "string"},
            "uptime": {"type": "number"},
            "lifecycle": {"type": "string", "description": "running, draining or refusing"},
            "state": {"type": "string"},
            "ready": {"type": "boolean"},
            "connected_since": {"type": ["string", "null"]},
            "retry_in": {"type": ["number", "null"]},
            "last_error": {"type": ["string", "null"]},
            "pending": {"type": "integer"},
            "unsent_bytes": {"type": "integer"},
            "congested": {"type": "integer",
                          "description": "connections over write_high_water (they take no "
                                         "work until they fall to write_low_water)"},
            "counters": {"type": "object", "additionalProperties": {"type": "integer"}},
            "members": {"type": "array", "items": {"type": "object"}},
            "addresses": {"type": "array", "items": {"type": "object"}},
            "spool": {"type": ["object", "null"],
                      "description": "with spool = disk: state, directory, fsync, max_bytes, "
                                     "records, bytes, oldest_age, retired, redelivered, "
                                     "set_aside"},
            "configuration": {"type": "object",
                              "description": "file, generation and loaded_at of the "
                                             "configuration in use"},
            "upstreams": {"type": "object", "additionalProperties": {"type": "object"},
                          "description": "one entry per configured upstream (the one named "
                                         "default is also described at the top level)"},
        },
        "additionalProperties": True,
    },
    "RouteIndex": {
        "type": "object", "required": ["routes", "openapi"],
        "properties": {
            "openapi": {"type": "string"},
            "page": {"type": ["string", "null"]},
            "upstreams": {"type": "array", "items": {"type": "string"},
                          "description": "the configured upstreams' names ({upstream})"},
            "routes": {"type": "array", "items": {
                "type": "object",
                "properties": {"path": {"type": "string"},
                               "methods": {"type": "array", "items": {"type": "string"}},
                               "summary": {"type": "string"}},
            }},
        },
    },
}

GENERIC = Operation("(undocumented route)")


def operation_of(route: Route) -> Operation:
    """A route's description (a route nobody described yet gets a generic one)."""
    return OPERATIONS.get(route.handler, GENERIC)


def openapi_path(route: Route) -> tuple[str, list[str]]:
    """The route's path in OpenAPI's template form, and its parameters' names."""
    label = route.label
    names = _PARAMETER.findall(label)
    return _PARAMETER.sub(lambda m: "{" + m.group(1) + "}", label), names


def _answers(route: Route, operation: Operation) -> dict[int, Answer]:
    answers = {**COMMON, **operation.answers}
    if route.path in ASSETS:
        kind = ASSETS[route.path][1].decode("ascii").split(";")[0]
        answers[200] = Answer(answers[200].description, {kind: {"type": "string"}})
    return answers


def _join(first: str, then: str) -> str:
    return f"{first}  {then}" if then else first


def _operation_id(method: str, path: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "index"
    return f"{method}_{slug}"


def _response(answer: Answer) -> dict[str, Any]:
    description = answer.description
    if answer.codes:
        description += " (error: " + ", ".join(f"`{code}`" for code in answer.codes) + ")"
    response: dict[str, Any] = {"description": description}
    if answer.content:
        response["content"] = {kind: {"schema": schema} for kind, schema in
                               answer.content.items()}
    if answer.retry_after:
        response["headers"] = {"Retry-After": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }}
    return response


def _response_or_ref(answer: Answer, shared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A shared answer as a reference (noted in ``shared``), any other inline."""
    if answer.name is None:
        return _response(answer)
    shared[answer.name] = _response(answer)
    return {"$ref": f"#/components/responses/{answer.name}"}


def document(config: Config, routes: tuple[Route, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` as ``config`` serves them."""
    secured = config.has_tokens
    upstreams = sorted(config.upstreams)
    paths: dict[str, dict[str, Any]] = {}
    shared: dict[str, dict[str, Any]] = {}  # components/responses, as used
    for route in routes:
        operation = operation_of(route)
        path, names = openapi_path(route)
        answers = _answers(route, operation)
        public = route.open or (route.metrics and not config.metrics_auth)
        if secured and not public:
            answers[401] = UNAUTHORIZED
            if config.scoped_tokens:
                answers[403] = FORBIDDEN
        description = operation.description
        if names:
            answers[404] = UNKNOWN_UPSTREAM
            description = _join("Addresses the upstream named in the path.", description)
        elif route.scope is not None:
            description = _join("Addresses the upstream named default.", description)
            if "default" not in config.upstreams:
                answers[404] = NO_DEFAULT
        parameters = [{
            "name": name, "in": "path", "required": True,
            "description": "the name of a configured upstream",
            "schema": {"type": "string", **({"enum": upstreams} if name == "upstream" else {})},
        } for name in names]
        parameters += [QUERY[name] for name in operation.query]
        for raw_method in route.methods:
            method = raw_method.decode("ascii").lower()
            entry: dict[str, Any] = {
                "operationId": _operation_id(method, path),
                "summary": operation.summary,
                "tags": [operation.tag],
                "responses": {str(code): _response_or_ref(answers[code], shared)
                              for code in sorted(answers)},
            }
            if description:
                entry["description"] = description
            if parameters:
                entry["parameters"] = parameters
            if operation.lines_body:
                entry["requestBody"] = {
                    "required": True,
                    "description": "the lines: text (one line per LF) or JSON",
                    "content": {
                        "text/plain": {"schema": {"type": "string"},
                                       "example": "SET a 1\nSET b 2\n"},
                        JSON: {"schema": _ref("Lines"),
                               "example": {"lines": ["SET a 1", "SET b 2"]}},
                    },
                }
            if secured and public:
                entry["security"] = []
            if method == "head":
                entry["summary"] = operation.summary + " (headers only)"
            paths.setdefault(path, {})[method] = entry
    components: dict[str, Any] = {"schemas": SCHEMAS,
                                  "responses": dict(sorted(shared.items()))}
    result: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "bridge",
            "version": __version__,
            "summary": "HTTP-to-TCP line bridge",
            "description": "Lines over HTTP to a line-oriented TCP server.  Every answer is "
                           'JSON unless noted; every error is {"error": code, "message": '
                           "text}.  Unknown paths answer 404 not_found; a method a path "
                           "does not take answers 405 method_not_allowed (with Allow).",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": paths,
        "components": components,
    }
    if secured:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "the bridge's token (token, token_file or a scoped "
                                      "token)"},
        }
        result["security"] = [{"bearer": []}]
    return result


def route_index(config: Config, routes: tuple[Route, ...]) -> dict[str, Any]:
    """What ``GET /`` answers a client that does not ask for HTML."""
    entries = []
    for route in routes:
        if route.ui:
            continue  # the page's files: the page itself is "page"
        path, _ = openapi_path(route)
        entries.append({
            "path": path,
            "methods": [method.decode("ascii") for method in route.methods],
            "summary": operation_of(route).summary,
        })
    return {
        "name": "bridge",
        "openapi": "/openapi.json",
        "page": "/" if config.ui else None,
        "upstreams": list(config.upstreams),
        "routes": entries,
    }
