"""Model-name typos: close known names are suggested before the routing advice."""

from __future__ import annotations

import doctest
from collections.abc import Callable

import pytest

import copilot.routing
from copilot import CopilotClient, EventType, ModelNotAvailableError
from copilot.routing import KNOWN_MODELS, UnroutableModelError, suggest_models


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        ("gpt4.1", ["gpt-4.1"]),
        ("gpt-4.1-mni", ["gpt-4.1-mini", "gpt-4o-mini", "gpt-4.1-nano"]),  # best first, 3 at most
        ("claude-sonet-4", ["claude-sonnet-4", "claude-sonnet-4-5"]),
        ("smolm2", ["smollm2"]),
        ("ech", ["echo"]),
        ("llama3.2:3b", []),  # nothing close: an Ollama model, no suggestion
        ("gpt-4.1", []),  # known: nothing to suggest
    ],
)
def test_suggest_models(typed: str, suggested: list[str]) -> None:
    assert suggest_models(typed) == suggested


def test_every_known_model_is_its_own_match() -> None:
    assert all(suggest_models(name) == [] for name in KNOWN_MODELS)


def test_the_error_suggests_first_then_gives_the_routing_advice(make_client: Callable) -> None:
    client = make_client()
    with pytest.raises(ModelNotAvailableError) as info:
        client.create_session(model="gpt4.1")
    error = info.value
    assert isinstance(error, UnroutableModelError)
    assert error.suggestions == ["gpt-4.1"]
    assert error.detail.startswith("model 'gpt4.1' is not available: did you mean 'gpt-4.1'? ")
    assert error.detail.index("did you mean") < error.detail.index("OLLAMA_HOST")
    assert str(error) == f"{error.detail}. {UnroutableModelError.API_HINT}"
    assert error.reasons and error.reasons[0].startswith("ollama: ")


def test_a_route_name_is_suggested_too(make_client: Callable) -> None:
    client = make_client(routes={"team-model": "echo"})
    with pytest.raises(UnroutableModelError, match="did you mean 'team-model'"):
        client.create_session(model="team-modle")


def test_the_fallback_warning_carries_the_suggestion(client: CopilotClient) -> None:
    session = client.create_session(model="gpt4.1")
    session.send_and_wait(prompt="hi")
    warning = next(e for e in session.get_messages() if e.type == EventType.SESSION_WARNING)
    assert "did you mean 'gpt-4.1'?" in warning.data.message


def test_routing_doctests_run() -> None:
    result = doctest.testmod(copilot.routing)
    assert result.attempted >= 2 and result.failed == 0
