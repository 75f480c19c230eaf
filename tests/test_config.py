"""The home directory and config.toml: routes, provider settings, defaults, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot import ConfigError, CopilotClient, ModelNotAvailableError
from copilot.config import home_directory


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")


def test_home_directory_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path / "from-env"))
    assert home_directory(tmp_path / "arg") == tmp_path / "arg"
    assert home_directory() == tmp_path / "from-env"
    monkeypatch.delenv("COPILOT_JUPYTER_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert home_directory() == tmp_path / "xdg" / "copilot-jupyter"


def test_config_file_routes_settings_and_defaults(tmp_path):
    home = tmp_path / "home"
    write_config(
        home,
        """
default_model = "house"
fallback_model = "echo"

[routes]
house = "echo"

[providers.echo]
context_window = 1234
""",
    )
    client = CopilotClient(base_directory=home)
    session = client.create_session()
    assert session.model == "house"
    assert session.send_and_wait(prompt="hi").data.model == "echo"
    assert client.get_provider("echo").context_window("echo") == 1234
    assert client.create_session(model="gpt-4.1").send_and_wait(prompt="x").data.model == "echo"
    client.stop()


def test_arguments_override_the_environment_and_the_file(make_client, monkeypatch, tmp_path):
    home = tmp_path / "home"
    write_config(home, 'fallback_model = "from-file"\n[routes]\nhouse = "missing:x"\n')
    monkeypatch.setenv("COPILOT_JUPYTER_FALLBACK_MODEL", "echo")
    client = make_client(base_directory=home, routes={"house": "echo"})
    assert client.fallback_model == "echo" and client.routes["house"] == "echo"
    assert client.create_session(model="house").send_and_wait(prompt="x").data.model == "echo"
    client.stop()
    monkeypatch.delenv("COPILOT_JUPYTER_FALLBACK_MODEL")
    assert CopilotClient(base_directory=home).fallback_model == "from-file"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[providers.openai]\napi_key = 'sk-in-a-file'\n", "environment variables only"),
        ("[providers.openai]\nauth_token = 'x'\n", "environment variables only"),
        ("this is = = not toml", "cannot read"),
        ("routes = 3\n", "[routes]"),
        ("[routes]\na = 1\n", "[routes]"),
    ],
)
def test_malformed_or_secret_config_is_refused_by_name(tmp_path, text, problem):
    home = tmp_path / "home"
    write_config(home, text)
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[")):
        CopilotClient(base_directory=home)


def test_key_names_that_are_not_secrets_are_accepted(make_client, tmp_path):
    home = tmp_path / "home"
    write_config(home, "[providers.anthropic]\nmax_tokens = 100\napi_key_env = 'MY_KEY'\n")
    client = make_client(base_directory=home)
    assert client.get_provider("anthropic").settings["max_tokens"] == 100


def test_routes_that_loop_are_a_config_error(tmp_path):
    client = CopilotClient(base_directory=tmp_path / "h", routes={"a": "b", "b": "a"})
    with pytest.raises(ConfigError, match="loop"):
        client.create_session(model="a")
    with pytest.raises(ModelNotAvailableError):
        client.create_session(model="claude-sonnet-4.5")
    client.stop()
