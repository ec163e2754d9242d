"""Schemathesis drives the published OpenAPI schema over real HTTP: no generated request gets a 5xx."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import schemathesis
from conftest_web import API_KEY
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from bot.config import ServerSettings, Settings
from bot.service import Service

pytest_plugins = ["conftest_web"]


@pytest.fixture(scope="module")
def open_url(web_service: Service, serve: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    """The demo pipeline with rate limits off, so every generated request reaches the handlers."""
    settings_ = Settings(
        data_dir=web_service.settings.data_dir, server=ServerSettings(rate_per_ip=0, rate_per_session=0)
    )
    with serve(Service(settings_, web_service.pipeline, records=web_service.records)) as url:
        yield url


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/healthz", "/metrics"])
def test_no_generated_request_gets_a_server_error(open_url: str, path: str) -> None:
    schema = schemathesis.openapi.from_url(f"{open_url}/openapi.json")
    operations = [op for r in schema.get_all_operations() if (op := r.ok()).path == path]  # type: ignore[union-attr]
    assert operations, f"{path} is not in the published schema"
    statuses: list[int] = []

    @given(case=operations[0].as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        for headers in ({"Authorization": f"Bearer {API_KEY}"}, {}):
            response = case.call_and_validate(base_url=open_url, headers=headers, checks=[not_a_server_error])
            statuses.append(response.status_code)

    run()
    assert statuses and max(statuses) < 500
    assert 200 in statuses  # valid requests got through to the handlers, not only the error paths
