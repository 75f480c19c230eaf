"""The environment variables the tests clear: one list, used by every test that builds an
environment.

The autouse fixture in ``conftest.py`` removes them for every test; tests that start a
subprocess, a kernel or a server outside a test's own environment (module-scoped fixtures run
before it) build the child's environment with :func:`scrubbed_environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Provider credentials and endpoints of the developer's shell (read by copilot's providers
#: or by the OpenAI and Anthropic SDKs they wrap). A test that needs one sets it itself.
PROVIDER_ENV: tuple[str, ...] = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_COMPATIBLE_API_KEY",
    "OPENAI_COMPATIBLE_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "GITHUB_TOKEN",
    "OLLAMA_HOST",
    "OLLAMA_API_KEY",
)

#: copilot's own settings: the store, its location and the models a session falls back to.
COPILOT_ENV: tuple[str, ...] = (
    "COPILOT_JUPYTER_HOME",
    "COPILOT_JUPYTER_STORE",
    "COPILOT_JUPYTER_MODEL",
    "COPILOT_JUPYTER_FALLBACK_MODEL",
)

#: Everything a test starts without: the provider variables and copilot's settings.
CLEARED_ENV: tuple[str, ...] = PROVIDER_ENV + COPILOT_ENV


def scrubbed_environ(
    base: Mapping[str, str] | None = None, *, extra: tuple[str, ...] = ()
) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) without :data:`CLEARED_ENV` and ``extra``."""
    drop = set(CLEARED_ENV) | set(extra)
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k not in drop}
