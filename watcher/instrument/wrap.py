"""The generic machinery that turns a vendor SDK method into an instrumented one.

This module owns ``WrapSpec`` (what a provider module tells us: how to read the request, the
response and each stream item) and ``wrap_method`` (sync or async, streaming or not), plus
``attribution``: the tenant/feature/user of the calls made inside a ``with`` block, since vendor
methods have no place for them. Reading a vendor object never raises into the application: a
failure is counted and the call is still recorded with what is known. It does not import any
vendor SDK (duck typing on the objects they return) nor own the call (``call``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from . import hooks
from .access import get as get  # re-exported: the wrappers and their tests read with it
from .call import _LLMCall, call_fields
from .hooks import _note_error
from .raw import is_raw_response, wrap_raw
from .record import CallRecord
from .streams import AsyncStreamProxy, OnItem, StreamState, SyncStreamProxy

WRAPPED_MARK: Final = "__watcher_original__"
WRAPPER_SELF: Final = "__watcher_wrapper__"
RESTORE_MARK: Final = "__watcher_restore__"
_NO_ATTRIBUTION: Final[Mapping[str, Any]] = MappingProxyType({})
_attribution: ContextVar[Mapping[str, Any]] = ContextVar("watcher_attribution", default=_NO_ATTRIBUTION)
_ATTRIBUTION_KEYS: Final = frozenset(
    {"tenant", "feature", "user_id", "prompt_version", "conversation_id", "labels", "context"}
)


@contextmanager
def attribution(**values: Any) -> Iterator[None]:
    """Attribute the wrapped calls made inside the block: tenant, feature, user_id, prompt_version, labels.

    ``conversation_id`` ties the calls of one session or thread (``gen_ai.conversation.id``).

    ``context`` (the retrieved passages, a list of strings) is given to the online evaluator's
    groundedness heuristic. Nested blocks inherit and override: ``with attribution(tenant="acme"):``.
    """
    unknown = set(values) - _ATTRIBUTION_KEYS
    if unknown:
        known = sorted(_ATTRIBUTION_KEYS)
        raise TypeError(f"attribution() got unknown keys {sorted(unknown)}; known: {known}")
    token = _attribution.set({**_attribution.get(), **values})
    try:
        yield
    finally:
        _attribution.reset(token)


def server_of(client: Any) -> tuple[str, int | None] | None:
    """Return the host and port of an SDK client's ``base_url`` (None when it has none)."""
    try:
        url = getattr(client, "base_url", None)
        host = getattr(url, "host", None)
        if not host:
            return None
        port = getattr(url, "port", None)
        if port is None:
            port = {"https": 443, "http": 80}.get(str(getattr(url, "scheme", "")))
        return str(host), (int(port) if port is not None else None)
    except Exception:  # an unusual client: no server attributes, never an error
        return None


@dataclass(frozen=True, slots=True)
class WrapSpec:
    """How to instrument one vendor method."""

    provider: str
    operation: str
    params: Callable[[Mapping[str, Any]], dict[str, Any]]
    """Request keyword arguments → span request parameters (primitives only)."""
    prompt: Callable[[Mapping[str, Any]], str | None]
    """Request keyword arguments → prompt text (for capture, evaluation and token estimates)."""
    on_response: Callable[[CallRecord, Any], None]
    """Fill the record from a non-streamed response."""
    on_item: OnItem
    """Fill the record from one stream item (first token, text, usage, finish reason)."""
    prepare: Callable[[dict[str, Any]], None] | None = None
    """Adjust the request keyword arguments in place before the call (e.g. ask for usage)."""
    server: tuple[str, int | None] | None = None
    """The client's endpoint (``server.address``, ``server.port``)."""
    input_messages: Callable[[Mapping[str, Any]], list[dict[str, Any]] | None] | None = None
    """Request keyword arguments → the conventions' input messages (content capture only)."""
    output_messages: Callable[[Any], list[dict[str, Any]] | None] | None = None
    """A non-streamed response → the conventions' output messages (content capture only)."""
    hide: Callable[[Mapping[str, Any]], Callable[[Any], bool] | None] | None = None
    """Request keyword arguments → which stream items the application must not see (the usage
    chunk that ``prepare`` asked for), or None: every item reaches it."""


def _wants() -> tuple[bool, bool]:
    """Return whether the response text and the prompt text are needed by the configuration."""
    state = hooks._state
    prompt = state.capture_content or state.observer is not None
    return prompt or state.refusal is not None, prompt


def _begin(spec: WrapSpec, kwargs: dict[str, Any]) -> tuple[_LLMCall, bool]:
    attrib = _attribution.get()
    if spec.prepare is not None:
        try:
            spec.prepare(kwargs)
        except Exception as exc:
            _note_error("request prepare", exc)
    labels = attrib.get("labels")
    call = _LLMCall(
        call_fields(
            spec.provider,
            kwargs.get("model") or "",
            spec.operation,
            attrib.get("tenant", ""),
            attrib.get("feature", ""),
            attrib.get("user_id"),
            attrib.get("prompt_version"),
            attrib.get("conversation_id"),
        ),
        functools.partial(spec.params, kwargs),  # read on the finisher's thread
        labels or {},
        spec.server,
    )
    return call, kwargs.get("stream") is True


def _enter(call: Any) -> None:
    """Start the call and give it the attributed retrieval context, if any."""
    rec = call.__enter__()
    context = _attribution.get().get("context")
    if context:
        rec.context = [str(c) for c in context]


def _after(
    spec: WrapSpec, call: Any, result: Any, kwargs: Mapping[str, Any], stream: bool, is_async: bool
) -> Any:
    """Return what the application gets: the result, or a proxy that ends the call later."""
    want_text, want_prompt = _wants()
    if is_raw_response(result):
        return wrap_raw(
            result,
            call,
            lambda parsed: _deliver(spec, call, parsed, kwargs, stream, want_text, want_prompt, is_async),
            stream,
        )
    if stream:
        call.detach()
    return _deliver(spec, call, result, kwargs, stream, want_text, want_prompt, is_async)


def _deliver(
    spec: WrapSpec,
    call: Any,
    result: Any,
    kwargs: Mapping[str, Any],
    stream: bool,
    want_text: bool,
    want_prompt: bool,
    is_async: bool | None = None,
) -> Any:
    """Record a typed result and end the call, or wrap a stream so that it ends the call.

    ``is_async`` says whether the wrapped method was a coroutine: another instrumentation's stream
    proxy (OpenLLMetry's) has both ``__next__`` and ``__anext__``, so the stream's own methods
    cannot tell. None (the stream helpers) falls back to them.
    """

    def prompt() -> str | None:
        # Called on the finisher's thread when the prompt is wanted: the structured messages too.
        rec = call.record
        if spec.input_messages is not None and rec is not None and hooks._state.capture_content:
            try:
                rec.input_messages = spec.input_messages(kwargs)
            except Exception as exc:
                _note_error("request messages", exc)
        try:
            return spec.prompt(kwargs)
        except Exception as exc:
            _note_error("request prompt", exc)
            return None

    if stream:
        state = StreamState(prompt, want_prompt)
        hidden = None
        if spec.hide is not None:
            try:
                hidden = spec.hide(kwargs)
            except Exception as exc:
                _note_error("stream hide", exc)
        if is_async if is_async is not None else hasattr(result, "__anext__"):
            return AsyncStreamProxy(result, call, spec.on_item, state, want_text, hidden)
        return SyncStreamProxy(result, call, spec.on_item, state, want_text, hidden)
    call.finish(None, functools.partial(_fill, spec, call.record, result, prompt, want_text, want_prompt))
    return result


def _fill(
    spec: WrapSpec,
    rec: CallRecord,
    result: Any,
    prompt: Callable[[], str | None],
    want_text: bool,
    want_prompt: bool,
) -> None:
    """Read a typed result into the record (on the finisher's thread)."""
    spec.on_response(rec, result)
    if spec.output_messages is not None and hooks._state.capture_content:
        try:
            rec.output_messages = spec.output_messages(result)
        except Exception as exc:
            _note_error("response messages", exc)
    if not want_text:
        rec.response = None
    if want_prompt and rec.prompt is None:
        rec.prompt = prompt()


def wrap_method(original: Callable[..., Any], spec: WrapSpec) -> Callable[..., Any]:
    """Return ``original`` instrumented by ``spec`` (an ``async def`` stays one).

    SDKs decorate their methods (argument checks), so the coroutine test looks through wrappers.
    """
    if inspect.iscoroutinefunction(original) or inspect.iscoroutinefunction(inspect.unwrap(original)):

        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call, stream = _begin(spec, kwargs)
            _enter(call)
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                call.finish(exc)
                raise
            return _after(spec, call, result, kwargs, stream, True)

        setattr(async_wrapper, WRAPPED_MARK, original)
        return async_wrapper

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call, stream = _begin(spec, kwargs)
        _enter(call)
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        return _after(spec, call, result, kwargs, stream, False)

    setattr(wrapper, WRAPPED_MARK, original)
    return wrapper


def _ours(fn: Any) -> bool:
    """Tell whether ``fn`` is one of our wrappers (not a vendor wrapper that copied our marks)."""
    return getattr(fn, WRAPPER_SELF, None) is fn


def patch(
    resource: Any,
    name: str,
    spec: WrapSpec,
    wrap: Callable[[Callable[..., Any], WrapSpec], Callable[..., Any]] = wrap_method,
) -> bool:
    """Replace ``resource.name`` by its instrumented version on the instance; return whether done.

    ``wrap`` builds the instrumented version (``wrap_method``, or a stream-helper wrapper). A
    method that already wraps ours (``functools.wraps`` copies our marks) is left alone.
    """
    original = getattr(resource, name, None)
    if original is None or not callable(original) or hasattr(original, WRAPPED_MARK):
        return False
    wrapper = wrap(original, spec)
    setattr(wrapper, WRAPPED_MARK, original)
    setattr(wrapper, WRAPPER_SELF, wrapper)
    # The vendor's own instance attribute must be put back on unpatch, not deleted.
    setattr(wrapper, RESTORE_MARK, name in getattr(resource, "__dict__", ()))
    setattr(resource, name, wrapper)
    return True


def unpatch(resource: Any, name: str) -> bool:
    """Restore ``resource.name`` to the vendor's method; return whether it was instrumented."""
    current = getattr(resource, name, None)
    if current is None or not _ours(current):
        return False
    if getattr(current, RESTORE_MARK, False):
        setattr(resource, name, getattr(current, WRAPPED_MARK))
    else:
        delattr(resource, name)  # the instance attribute goes; the class method shows through again
    return True


def rebuild_variants(resource: Any, names: tuple[str, ...]) -> None:
    """Drop the cached ``with_raw_response``-style views of ``resource`` so they wrap its current methods.

    The SDK builds each view once (a cached property) around the methods it finds then; dropped,
    the next access builds it around the instrumented (or, after unpatching, the original) ones.
    """
    attrs = getattr(resource, "__dict__", None)
    if isinstance(attrs, dict):
        for name in names:
            attrs.pop(name, None)
