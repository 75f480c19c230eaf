"""Shared fixtures: every test gets its own store directory, and the echo model stands in
for models that have no provider here (no API keys in tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envvars import CLEARED_ENV

from copilot import CopilotClient
from copilot.testing import ScriptedOpenAIServer


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Provider credentials and copilot settings of the developer's shell never reach a test
    (the one list: ``tests/envvars.py``); each test gets its own default store directory."""
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def home(tmp_path) -> str:
    """A fresh store directory."""
    return str(tmp_path / "copilot-home")


@pytest.fixture
def make_client(home: str) -> Iterator[Callable[..., CopilotClient]]:
    """A factory of clients (``CopilotClient(**kwargs)``, on ``home`` unless ``base_directory``
    is given) that stops every client it made at teardown, whether the test passed or not.

    The clients are not started: the first call starts one, as for a user. ``stop`` is
    idempotent, so a test may stop one itself (to check what stopping does).
    """
    made: list[CopilotClient] = []

    def make(**kwargs: Any) -> CopilotClient:
        kwargs.setdefault("base_directory", home)
        made.append(CopilotClient(**kwargs))
        return made[-1]

    yield make
    for c in reversed(made):
        c.stop(timeout=5)


@pytest.fixture
def client(make_client: Callable[..., CopilotClient]) -> CopilotClient:
    """A started client on a fresh store, with echo as the fallback model."""
    c = make_client(fallback_model="echo")
    c.start()
    return c


@pytest.fixture
def slow_client(make_client: Callable[..., CopilotClient]) -> CopilotClient:
    """A client whose echo model streams one word every 50 ms."""
    c = make_client(fallback_model="echo", providers={"echo": {"chunk_delay": 0.05}})
    c.start()
    return c


@pytest.fixture
def openai_server() -> Iterator[ScriptedOpenAIServer]:
    """A scripted OpenAI-compatible server on 127.0.0.1 (``copilot.testing``), closed after."""
    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A real PostgreSQL server for the whole run (tests/pg.py); skips if it cannot start here."""
    from pg import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
