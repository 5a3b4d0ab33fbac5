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
from .call import llm_call
from .hooks import _note_error
from .record import CallRecord
from .streams import AsyncStreamProxy, OnItem, StreamState, SyncStreamProxy

WRAPPED_MARK: Final = "__watcher_original__"
_NO_ATTRIBUTION: Final[Mapping[str, Any]] = MappingProxyType({})
_attribution: ContextVar[Mapping[str, Any]] = ContextVar("watcher_attribution", default=_NO_ATTRIBUTION)
_ATTRIBUTION_KEYS: Final = frozenset({"tenant", "feature", "user_id", "prompt_version", "labels", "context"})


@contextmanager
def attribution(**values: Any) -> Iterator[None]:
    """Attribute the wrapped calls made inside the block: tenant, feature, user_id, prompt_version, labels.

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


def get(obj: Any, *path: str) -> Any:
    """Return ``obj.a.b`` (or ``obj["a"]["b"]``) along ``path``, None where anything is missing."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return obj


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


def _wants() -> tuple[bool, bool]:
    """Return whether the response text and the prompt text are needed by the configuration."""
    state = hooks._state
    prompt = state.capture_content or state.observer is not None
    return prompt or state.refusal is not None, prompt


def _begin(spec: WrapSpec, kwargs: dict[str, Any]) -> tuple[Any, bool]:
    attrib = _attribution.get()
    model = kwargs.get("model")
    try:
        params = spec.params(kwargs)
    except Exception as exc:
        _note_error("request parameters", exc)
        params = {}
    if spec.prepare is not None:
        try:
            spec.prepare(kwargs)
        except Exception as exc:
            _note_error("request prepare", exc)
    call = llm_call(
        provider=spec.provider,
        model=str(model or ""),
        operation=spec.operation,
        tenant=attrib.get("tenant", ""),
        feature=attrib.get("feature", ""),
        user_id=attrib.get("user_id"),
        prompt_version=attrib.get("prompt_version"),
        labels=attrib.get("labels"),
        **params,
    )
    return call, kwargs.get("stream") is True


def _enter(call: Any) -> None:
    """Start the call and give it the attributed retrieval context, if any."""
    rec = call.__enter__()
    context = _attribution.get().get("context")
    if context:
        rec.context = [str(c) for c in context]


def _after(spec: WrapSpec, call: Any, result: Any, kwargs: Mapping[str, Any], stream: bool) -> Any:
    """Return what the application gets: the result, or a proxy that ends the call with the stream."""
    rec = call.record
    want_text, want_prompt = _wants()

    def prompt() -> str | None:
        try:
            return spec.prompt(kwargs)
        except Exception as exc:
            _note_error("request prompt", exc)
            return None

    if stream:
        call.detach()
        state = StreamState(prompt, want_prompt)
        if hasattr(result, "__anext__"):
            return AsyncStreamProxy(result, call, spec.on_item, state, want_text)
        return SyncStreamProxy(result, call, spec.on_item, state, want_text)
    try:
        spec.on_response(rec, result)
        if not want_text:
            rec.response = None
        if want_prompt and rec.prompt is None:
            rec.prompt = prompt()
    except Exception as exc:
        _note_error("response", exc)
    call.finish(None)
    return result


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
            return _after(spec, call, result, kwargs, stream)

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
        return _after(spec, call, result, kwargs, stream)

    setattr(wrapper, WRAPPED_MARK, original)
    return wrapper


def patch(resource: Any, name: str, spec: WrapSpec) -> bool:
    """Replace ``resource.name`` by its instrumented version on the instance; return whether done."""
    original = getattr(resource, name, None)
    if original is None or not callable(original) or hasattr(original, WRAPPED_MARK):
        return False
    setattr(resource, name, wrap_method(original, spec))
    return True


def unpatch(resource: Any, name: str) -> bool:
    """Restore ``resource.name`` to the vendor's method; return whether it was instrumented."""
    current = getattr(resource, name, None)
    if current is None or not hasattr(current, WRAPPED_MARK):
        return False
    delattr(resource, name)  # the instance attribute goes; the class method shows through again
    return True
