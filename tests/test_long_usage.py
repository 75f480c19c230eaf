"""Usage and cost: assistant.usage's cost from the shipped (or configured) price table,
session.usage_info after each turn, and per-session totals kept in the metadata, checked
against a hand computation on the scripted OpenAI server (one token per word)."""

from __future__ import annotations

import pytest

from copilot import CopilotClient, EventType
from copilot.errors import ConfigError
from copilot.prices import DEFAULT_PRICES, PRICES_AS_OF, Price, PriceTable
from copilot.providers.base import estimate_tokens
from copilot.testing import ScriptedOpenAIServer


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-usage")
    with ScriptedOpenAIServer() as srv:
        yield srv


def _client(home, server, **settings) -> CopilotClient:
    return CopilotClient(
        base_directory=home, providers={"openai": {"base_url": server.base_url, **settings}}
    )


def test_cost_and_totals_match_a_hand_computation(home, server):
    client = _client(home, server)
    session = client.create_session(session_id="costly", model="openai:gpt-4.1")
    session.send_and_wait("hello world")  # in: 2 words; out: "echo: hello world" = 3
    session.send_and_wait("again")  # in: 2 + 3 + 1 = 6; out: "echo: again" = 2
    # gpt-4.1: $2 in, $8 out per million tokens
    first = (2 * 2 + 3 * 8) / 1e6
    second = (6 * 2 + 2 * 8) / 1e6
    usages = [e.data for e in session.get_events() if e.type == EventType.ASSISTANT_USAGE]
    assert [(u.inputTokens, u.outputTokens) for u in usages] == [(2, 3), (6, 2)]
    assert [u.cost for u in usages] == [pytest.approx(first), pytest.approx(second)]
    totals = client.get_session_metadata("costly")["usage"]
    assert totals == {
        "turns": 2,
        "inputTokens": 8,
        "outputTokens": 5,
        "cost": pytest.approx(first + second, abs=1e-12),
        "unpricedTurns": 0,
    }
    listed = {m["sessionId"]: m for m in client.list_sessions()}
    assert listed["costly"]["usage"] == totals
    client.stop()


def test_unknown_price_gives_no_cost_and_is_counted_apart(home, server):
    client = _client(home, server)
    session = client.create_session(model="openai:mystery-model")
    session.send_and_wait("a b")
    usage = next(e.data for e in session.get_events() if e.type == EventType.ASSISTANT_USAGE)
    assert "cost" not in usage
    totals = client.get_session_metadata(session.session_id)["usage"]
    assert totals["unpricedTurns"] == 1 and totals["cost"] == 0.0
    assert totals["inputTokens"] == 2
    client.stop()


def test_config_overrides_the_shipped_price(home, server):
    import pathlib

    pathlib.Path(home).mkdir(parents=True)
    (pathlib.Path(home) / "config.toml").write_text(
        '[prices."openai:gpt-4o"]\ninput = 1000.0\noutput = 0\n'
    )
    client = _client(home, server)
    session = client.create_session(model="openai:gpt-4o")
    session.send_and_wait("one two three")  # 3 words in
    usage = next(e.data for e in session.get_events() if e.type == EventType.ASSISTANT_USAGE)
    assert usage.cost == pytest.approx(3 * 1000.0 / 1e6)
    client.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[prices."x:y"]\ninput = 1\n', "exactly input"),
        ('[prices."x:y"]\ninput = -1\noutput = 1\n', "input is a number >= 0"),
        ('[prices."x:y"]\ninput = "1"\noutput = 1\n', "input is a number >= 0"),
        ("prices = 3\n", "prices"),
    ],
)
def test_a_bad_price_in_config_is_refused_at_construction(home, text, message):
    import pathlib

    pathlib.Path(home).mkdir(parents=True)
    (pathlib.Path(home) / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        CopilotClient(base_directory=home)


def test_price_lookup_snapshots_and_providers():
    table = PriceTable()
    assert PRICES_AS_OF.count("-") == 2
    assert table.price("openai:gpt-4.1-2025-04-14") == DEFAULT_PRICES["openai:gpt-4.1"]
    assert table.price("openai:gpt-4.1-mini") == Price(0.40, 1.60)
    # another model sharing the start is not a snapshot of it
    assert table.price("openai:o3-pro") is None
    sonnet = table.price("anthropic:claude-sonnet-4-5-20250929")
    assert sonnet == DEFAULT_PRICES["anthropic:claude-sonnet-4-5"]
    assert table.price("local:smollm2") == Price(0.0, 0.0)
    assert table.cost("openai:gpt-4.1", None, 3) is None
    assert table.cost("openai:gpt-4.1", 1_000_000, 1_000_000) == 10.0


def test_usage_info_after_each_turn(home, server):
    client = _client(home, server, context_window=2000)
    session = client.create_session(model="openai:gpt-4o", system_message="Be brief.")
    seen = []
    session.on(seen.append)
    session.send_and_wait("first prompt")
    session.send_and_wait("second")
    infos = [e.data for e in seen if e.type == EventType.SESSION_USAGE_INFO]
    assert len(infos) == 2
    overhead = 4  # per message (copilot.context.MESSAGE_OVERHEAD)
    system = estimate_tokens("Be brief.") + overhead
    first = system + estimate_tokens("first prompt") + estimate_tokens("echo: first prompt")
    first += 2 * overhead
    assert infos[0]["currentTokens"] == first
    assert infos[0]["tokenLimit"] == 2000
    assert infos[0]["messagesLength"] == 3  # system, prompt, reply
    assert infos[0]["systemTokens"] == system
    assert infos[0]["conversationTokens"] == first - system
    second = first + estimate_tokens("second") + estimate_tokens("echo: second") + 2 * overhead
    assert infos[1]["currentTokens"] == second and infos[1]["messagesLength"] == 5
    # ephemeral, as in the Copilot SDK: delivered just before the reply is stored, never
    # stored; the stored assistant.usage carries the same fill for a later reader
    types = [e.type for e in seen]
    at = types.index(EventType.SESSION_USAGE_INFO)
    assert types[at + 1] == EventType.ASSISTANT_MESSAGE
    stored = session.get_events()
    assert EventType.SESSION_USAGE_INFO not in [e.type for e in stored]
    usages = [e.data for e in stored if e.type == EventType.ASSISTANT_USAGE]
    assert [(u.contextTokens, u.tokenLimit) for u in usages] == [(first, 2000), (second, 2000)]
    client.stop()


def test_usage_info_counts_the_turns_tool_calls_and_results(home, server):
    """The context a tool turn leaves holds its calls and results: the fill after it (and the
    next turn's context) counts them, by hand here."""
    from copilot.testing import Reply, ToolCall
    from copilot.tools import PermissionHandler, define_tool

    result_text = "catalogue entry: " + "shelf row column " * 100

    @define_tool(description="Look up a key")
    def lookup(key: int) -> str:
        return result_text

    client = _client(home, server, context_window=4000)
    session = client.create_session(
        model="openai:gpt-4o",
        system_message="Be brief.",
        tools=[lookup],
        on_permission_request=PermissionHandler.approve_all,
    )
    seen = []
    session.on(seen.append)
    server.enqueue(Reply(tool_calls=[ToolCall("lookup", {"key": 7}, id="c1")]), Reply("found it"))
    session.send_and_wait("look up 7")
    info = next(e.data for e in seen if e.type == EventType.SESSION_USAGE_INFO)
    overhead = 4
    system = estimate_tokens("Be brief.") + overhead
    prompt = estimate_tokens("look up 7") + overhead
    arguments = server.chat_requests[1].json["messages"][2]["tool_calls"][0]["function"]
    call = overhead + estimate_tokens("lookup" + arguments["arguments"])  # empty text
    result = estimate_tokens(result_text) + overhead
    reply = estimate_tokens("found it") + overhead
    assert info["currentTokens"] == system + prompt + call + result + reply
    assert info["messagesLength"] == 5  # system, prompt, the call, its result, the reply
    # the next turn's context counts the same steps: its fill grows by this turn's prompt+reply
    session.send_and_wait("thanks")
    later = [e.data for e in seen if e.type == EventType.SESSION_USAGE_INFO][-1]
    thanks = estimate_tokens("thanks") + estimate_tokens("echo: thanks") + 2 * overhead
    assert later["currentTokens"] == info["currentTokens"] + thanks
    client.stop()
