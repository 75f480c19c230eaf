"""Shared fixtures: every test gets its own store directory, and the echo model stands in
for models that have no provider here (no API keys in tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from copilot import CopilotClient

# Provider credentials of the developer's shell must never leak into tests.
_SECRET_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "GITHUB_TOKEN",
    "OLLAMA_HOST",
)


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in _SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COPILOT_JUPYTER_MODEL", raising=False)
    monkeypatch.delenv("COPILOT_JUPYTER_FALLBACK_MODEL", raising=False)
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def home(tmp_path) -> str:
    """A fresh store directory."""
    return str(tmp_path / "copilot-home")


@pytest.fixture
def client(home: str) -> Iterator[CopilotClient]:
    """A started client on a fresh store, with echo as the fallback model."""
    c = CopilotClient(base_directory=home, fallback_model="echo")
    c.start()
    yield c
    c.stop(timeout=5)


@pytest.fixture
def slow_client(home: str) -> Iterator[CopilotClient]:
    """A client whose echo model streams one word every 50 ms."""
    c = CopilotClient(
        base_directory=home, fallback_model="echo", providers={"echo": {"chunk_delay": 0.05}}
    )
    c.start()
    yield c
    c.stop(timeout=5)


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
