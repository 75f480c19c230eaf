"""The routing table: which provider serves a model name, by family and by credentials."""

from __future__ import annotations

import pytest

from copilot import EventType
from copilot.errors import ModelNotAvailableError
from copilot.providers.base import Availability
from copilot.routing import Router, candidates_for


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4.1", [("openai", "gpt-4.1"), ("github", "openai/gpt-4.1")]),
        ("gpt-4o-mini", [("openai", "gpt-4o-mini"), ("github", "openai/gpt-4o-mini")]),
        (
            "chatgpt-4o-latest",
            [("openai", "chatgpt-4o-latest"), ("github", "openai/chatgpt-4o-latest")],
        ),
        ("o1", [("openai", "o1"), ("github", "openai/o1")]),
        ("o3-mini", [("openai", "o3-mini"), ("github", "openai/o3-mini")]),
        ("o4-mini", [("openai", "o4-mini"), ("github", "openai/o4-mini")]),
        ("claude-sonnet-4", [("anthropic", "claude-sonnet-4")]),
        ("smollm2", [("local", "smollm2")]),
        ("echo", [("echo", "echo")]),
        # unknown bare names go to ollama, including near misses of the families above
        ("llama3.2", [("ollama", "llama3.2")]),
        ("o2", [("ollama", "o2")]),
        ("o1x", [("ollama", "o1x")]),
        ("gpt4", [("ollama", "gpt4")]),
        ("mistral:7b", [("ollama", "mistral:7b")]),  # "mistral" is no provider: part of the name
        # explicit ids name the provider, splitting at the first colon only
        ("ollama:llama3.2:3b", [("ollama", "llama3.2:3b")]),
        ("github:openai/gpt-4.1", [("github", "openai/gpt-4.1")]),
    ],
)
def test_candidates_by_family(model, expected):
    assert candidates_for(model) == expected


def _router(*usable: str, fallback: str | None = None) -> Router:
    return Router(
        lambda name: Availability(name in usable, "" if name in usable else f"{name} off"),
        fallback_model=fallback,
    )


def test_bare_gpt_prefers_openai_and_falls_to_github_without_its_key():
    assert _router("openai", "github").resolve("gpt-4.1").model_id == "openai:gpt-4.1"
    assert _router("github").resolve("gpt-4.1").model_id == "github:openai/gpt-4.1"
    assert _router("openai").resolve("gpt-4.1").model_id == "openai:gpt-4.1"
    with pytest.raises(ModelNotAvailableError, match="openai: openai off; github: github off"):
        _router().resolve("gpt-4.1")


def test_unknown_bare_names_go_to_ollama_only():
    assert _router("ollama", "openai").resolve("llama3.2").model_id == "ollama:llama3.2"
    with pytest.raises(ModelNotAvailableError, match="ollama: ollama off"):
        _router("openai", "github", "anthropic").resolve("llama3.2")
    route = _router("echo", fallback="echo").resolve("llama3.2")
    assert route.fallback and route.model_id == "echo" and "ollama off" in route.warning


@pytest.mark.parametrize(
    ("env", "resolved"),
    [
        ({"OPENAI_API_KEY": "sk-a", "GITHUB_TOKEN": "ghp-b"}, "openai:gpt-4.1"),
        ({"GITHUB_TOKEN": "ghp-b"}, "github:openai/gpt-4.1"),
        ({"OPENAI_API_KEY": "sk-a"}, "openai:gpt-4.1"),
    ],
)
def test_bare_gpt_follows_the_credentials_that_are_set(make_client, monkeypatch, env, resolved):
    # the real providers' availability (a key in the environment), through the public API
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = make_client()
    session = client.create_session(model="gpt-4.1")
    start = [e for e in session.get_messages() if e.type == EventType.SESSION_START][0]
    assert start.data.resolvedModel == resolved
