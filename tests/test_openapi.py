"""The OpenAPI document (sesd/api/openapi.json): valid, complete, served, and true of the service.

The last test runs schemathesis against a real `python run.py`: every documented operation gets
generated valid (positive) and invalid (negative) requests, and every answer must be a documented
status with a body that conforms to its documented schema, never a 5xx.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from sesd.api.app import create_app
from sesd.config import Settings
from sesd.testing.harness import API_KEY, Service

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SOURCE = Path(__file__).resolve().parent.parent / "sesd" / "api" / "openapi.json"


def _document() -> dict[str, Any]:
    # As an installed package finds it (package-data), not by a path into the checkout.
    raw = importlib.resources.files("sesd.api").joinpath("openapi.json").read_bytes()
    doc: dict[str, Any] = json.loads(raw)
    return doc


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items()
            for method in item if method in HTTP_METHODS}


def _registered(tmp_path: Path) -> set[tuple[str, str]]:
    settings = dataclasses.replace(Settings(), db_path=tmp_path / "app.db", api_key=API_KEY)
    app = create_app(settings)
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"}


# ------------------------------------------------------------------------------ the document


def test_document_is_valid_openapi() -> None:
    doc = _document()
    assert doc["openapi"] == "3.0.3"
    validate(doc)  # raises on any violation of the OpenAPI 3.0 schema, with unresolved $refs


def test_document_matches_router(tmp_path: Path) -> None:
    registered = _registered(tmp_path)
    documented = _documented(_document())
    assert registered, "no routes registered"
    assert registered - documented == set(), "routes missing from openapi.json"
    assert documented - registered == set(), "documented operations that are not routes"


def test_document_describes_errors_and_auth() -> None:
    doc = _document()
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "path", "method", "timestamp"}
    assert all(p["type"] == "string" for p in error["properties"].values())
    scheme = doc["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    public = {("GET", "/v1/events/open"), ("POST", "/v1/events/results"), ("GET", "/health"),
              ("GET", "/openapi.json"), ("GET", "/v1/events/click/{token}"),
              ("GET", "/v1/unsubscribe/{token}"), ("POST", "/v1/unsubscribe/{token}")}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            statuses = set(op["responses"])
            # Success is a 200, or the click route's redirect.
            success = "302" if path == "/v1/events/click/{token}" else "200"
            assert success in statuses and "500" in statuses, (method, path)
            if (method.upper(), path) in public:
                assert "security" not in op, (method, path)
            else:
                assert op["security"] == [{"apiKey": []}], (method, path)
                assert "401" in statuses, (method, path)
    sns = doc["paths"]["/v1/events/results"]["post"]
    (header,) = [p for p in sns["parameters"] if p["in"] == "header"]
    assert header["name"] == "x-amz-sns-message-type" and header["required"] is True
    health = doc["paths"]["/health"]["get"]["responses"]
    assert {"200", "503"} <= set(health)
    pixel = doc["paths"]["/v1/events/open"]["get"]["responses"]["200"]
    assert list(pixel["content"]) == ["image/png"]


async def test_openapi_route_serves_the_file(tmp_path: Path, aiohttp_client: Any) -> None:
    settings = dataclasses.replace(Settings(), db_path=tmp_path / "app.db", api_key=API_KEY)
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.read() == SOURCE.read_bytes()


# ------------------------------------------------------------------------ schemathesis, live

# Per operation and generation mode; SESD_FUZZ_EXAMPLES=500 for a longer hunt outside CI.
MAX_EXAMPLES = int(os.environ.get("SESD_FUZZ_EXAMPLES", "25"))


@dataclasses.dataclass
class Fuzzed:
    cases: int = 0
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    problems: dict[str, str] = dataclasses.field(default_factory=dict)


def _fuzz(operation: Any, mode: Any, base_url: str, checks: list[Any]) -> Fuzzed:
    """Run up to MAX_EXAMPLES generated cases of one operation against the live service.

    Problems are collected rather than raised, so one run reports all of them (no shrinking:
    each comes with the curl command that reproduces it)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    out = Fuzzed()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        out.cases += 1
        try:
            response = case.call(base_url=base_url, headers={"x-api-key": API_KEY}, timeout=10)
            out.statuses[response.status_code] += 1
            case.validate_response(response, checks=checks, headers={"x-api-key": API_KEY})
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
            # One entry per kind of failure (title), not per generated value.
            inner = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
            key = " + ".join(sorted({getattr(e, "title", type(e).__name__) for e in inner}))
            out.problems.setdefault(key, f"{key}: {exc}\n{''.join(map(str, inner))}\n"
                                         f"  reproduce: {case.as_curl_command()}")

    try:
        run()
    except Unsatisfiable:
        # Negative mode for an operation with no input to make invalid (GET /health).
        if mode != GenerationMode.NEGATIVE:
            raise
    return out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_schemathesis_against_live_service(spawn_sesd: Callable[..., Service]) -> None:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    service = spawn_sesd({"EMAIL_RATE": "0"})
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # schemathesis leaves out the operation that serves the schema itself (tested above).
    tested = {(op.method.upper(), op.path) for op in operations}
    assert tested == _documented(_document()) - {("GET", "/openapi.json")}
    started = time.monotonic()
    runs = {f"{op.label} [{mode.value}]": _fuzz(op, mode, service.url, checks)
            for op in operations for mode in modes}
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {sum(r.cases for r in runs.values())} cases over "
          f"{len(operations)} operations in {elapsed:.1f}s")
    for label, r in runs.items():
        print(f"  {label}: {r.cases} cases, statuses {dict(sorted(r.statuses.items()))}")
    assert all(runs[f"{op.label} [positive]"].cases for op in operations)
    failures = [f"{label}: {p}" for label, r in runs.items() for p in r.problems.values()]
    assert not failures, "\n\n".join(failures)
    # The service survived the whole run.
    status, body = service.request("GET", "/health")
    assert status == 200, body
