"""Web test fixtures (load with `pytest_plugins = ["conftest_web"]`): a real Service and its web app on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, sync_playwright

from bot.auth import Secrets
from bot.config import GuardsSettings, PluginSpec, Settings
from bot.service import Service
from bot.web import create_app

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]
ARTICLES = Path(__file__).resolve().parent.parent / "knowledge" / "demo" / "articles"
API_KEY = "test-api-key"
OPERATOR_PASSWORD = "operator-pass"
OPS_PASSWORD = "ops-pass"
SECRETS = Secrets(
    api_keys=frozenset({API_KEY}),
    console_password=OPERATOR_PASSWORD,
    ops_password=OPS_PASSWORD,
    session_secret=b"test-session-secret",
)


@contextmanager
def serving(service: Service, secrets: Secrets = SECRETS) -> Iterator[str]:
    """Serve `create_app(service, secrets)` with uvicorn on a free 127.0.0.1 port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the server keeps this socket, so no other process can take the port meanwhile
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service, secrets), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def serve() -> Callable[..., AbstractContextManager[str]]:
    """`serving`, for tests that need the web app over a service of their own."""
    return serving


@pytest.fixture(scope="session")
def web_service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    """A real Service (MiniLM, Chroma in tmp, extractive responder, two input guards) over the demo articles."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("web-data"),
        embedder=PluginSpec(name="minilm"),
        retriever=PluginSpec(name="chroma"),
        responder=PluginSpec(name="extractive"),
        guards=GuardsSettings(input=[PluginSpec(name="max_length"), PluginSpec(name="instruction_override")]),
    )
    service = Service.start(settings, warm=False)
    service.index.rebuild(ARTICLES)
    service.warm()
    return service


@pytest.fixture(scope="session")
def web_url(web_service: Service) -> Iterator[str]:
    """Base URL of the web app serving `web_service`."""
    with serving(web_service) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (one per test module); screenshots go to SHOTS."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
