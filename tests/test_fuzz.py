"""Generated bad and borderline requests to every route of the real server (cases: tests/fuzzing.py).

Every answer must be well formed: no 5xx but a 529 with `retry-after`, the Anthropic error shape with
the right type for the status, a `request-id` header, and an answer within the client's timeout. A
failure shows the request (shrunk by hypothesis), the response and the server's log lines for it.
The default run sends nearly five hundred requests; bench/fuzz.py sends the same cases by the ten
thousand.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Server
from fuzzing import Case, Fuzzer, Targets, prepare, strategies
from hypothesis import HealthCheck, given, settings
from starlette.routing import Route

from missive.routes import admin, batches, files

# Examples per route (each one request, plus those hypothesis sends when it shrinks a failure).
EXAMPLES = {
    "POST /v1/messages": 100,
    "POST /v1/messages (stream)": 40,
    "POST /v1/messages/count_tokens": 50,
    "GET /v1/models": 15,
    "GET /v1/models/{id}": 15,
    "GET /v1/organizations/me": 8,
    "GET /v1/organizations/workspaces": 12,
    "POST /v1/organizations/workspaces": 15,
    "GET /v1/organizations/workspaces/{id}": 10,
    "POST /v1/organizations/workspaces/{id}": 15,
    "POST /v1/organizations/workspaces/{id}/archive": 8,
    "GET /v1/organizations/api_keys": 12,
    "POST /v1/organizations/api_keys": 15,
    "GET /v1/organizations/api_keys/{id}": 10,
    "POST /v1/organizations/api_keys/{id}": 12,
    "GET /v1/organizations/usage_report/messages": 20,
    "GET /v1/organizations/cost_report": 15,
    "GET /metrics": 10,
    "POST /v1/messages/batches": 20,
    "GET /v1/messages/batches": 10,
    "GET /v1/messages/batches/{id}": 10,
    "GET /v1/messages/batches/{id}/results": 10,
    "POST /v1/messages/batches/{id}/cancel": 8,
    "DELETE /v1/messages/batches/{id}": 8,  # after the others: it may delete the fuzzer's batch
    "POST /v1/files": 30,
    "GET /v1/files": 12,
    "GET /v1/files/{id}": 8,
    "GET /v1/files/{id}/content": 8,
    "DELETE /v1/files/{id}": 8,  # after the other file routes: it may delete the fuzzer's file
    "unknown path or method": 30,
}
FUZZ = settings(database=None, deadline=None, suppress_health_check=list(HealthCheck), print_blob=False)


@pytest.fixture(scope="module")
def targets(server: Server) -> Targets:
    made = server.cli("keys", "create", "--admin", "--name", "fuzz admin")
    assert made.returncode == 0, made.stderr
    return prepare(server.base_url, made.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fuzzer(server: Server) -> Iterator[Fuzzer]:
    sender = Fuzzer(server.base_url, server.log_path, timeout=60)
    yield sender
    sender.close()


def test_every_route_is_fuzzed(targets: Targets) -> None:
    """A route added to the server without cases here fails this test."""
    routes = [*admin.routes(), *batches.routes(), *files.routes()]
    served = {f"{method} {route.path}" for route in routes for method in route.methods or () if method != "HEAD"}
    for name in ("{workspace_id}", "{key_id}", "{batch_id}", "{file_id}"):
        served = {route.replace(name, "{id}") for route in served}
    served |= {"POST /v1/messages", "POST /v1/messages/count_tokens", "GET /v1/models", "GET /v1/models/{id}", "GET /metrics"}
    assert served <= set(strategies(targets)) and set(strategies(targets)) == set(EXAMPLES)
    assert all(isinstance(route, Route) for route in routes)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("route", list(EXAMPLES))
def test_no_request_gets_a_malformed_answer(route: str, targets: Targets, fuzzer: Fuzzer) -> None:
    @settings(FUZZ, max_examples=EXAMPLES[route])
    @given(case=strategies(targets)[route])
    def answered_well(case: Case) -> None:
        outcome = fuzzer.send(case)
        assert not outcome.problems, outcome.report()

    answered_well()
