"""Stream helpers that return a context manager which makes the request on entry.

Anthropic's ``messages.stream(...)`` returns a ``MessageStreamManager`` (or the async one): no
request is sent until ``with``/``async with`` enters it, and it does not go through
``messages.create``. This module owns ``wrap_stream_helper``: the helper returns a proxy of the
manager that starts the call on entry (so TTFT and duration count from the request), puts a
stream proxy under the SDK's stream object (its ``_raw_stream``, so that every event, however the
application reads them — ``text_stream``, iteration, ``get_final_message()`` — passes through
``on_item``) and ends the call on exit with what was seen. An SDK without ``_raw_stream`` still
gets a span, a duration and whatever its final snapshot says. Nothing here raises into the
application but the vendor's own exceptions. It does not own reading events (the wrappers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .hooks import _note_error
from .streams import _Base as _StreamProxy
from .wrap import WrapSpec, _begin, _deliver, _enter, _wants

RAW_STREAM_ATTR = "_raw_stream"


class StreamManagerProxy:
    """A vendor stream manager whose ``with``/``async with`` block is one recorded call."""

    def __init__(self, inner: Any, spec: WrapSpec, kwargs: dict[str, Any]) -> None:
        self._inner = inner
        self._spec = spec
        self._kwargs = kwargs
        self._call: Any = None
        self._stream: Any = None
        self._proxy: _StreamProxy | None = None

    def _begin(self) -> None:
        try:
            self._call, _ = _begin(self._spec, dict(self._kwargs))
            _enter(self._call)
        except Exception as exc:
            _note_error("stream helper start", exc)
            self._call = None

    def _entered(self, stream: Any) -> Any:
        """Put our proxy under the SDK's stream object; leave the caller's context."""
        call = self._call
        if call is None:
            return stream
        self._stream = stream
        try:
            raw = getattr(stream, RAW_STREAM_ATTR, None)
            if raw is not None:
                want_text, want_prompt = _wants()
                proxy = _deliver(self._spec, call, raw, self._kwargs, True, want_text, want_prompt)
                setattr(stream, RAW_STREAM_ATTR, proxy)
                self._proxy = proxy
        except Exception as exc:
            _note_error("stream helper", exc)
        call.detach()
        return stream

    def _failed(self, exc: BaseException) -> None:
        if self._call is not None:
            self._call.finish(exc)

    def _exited(self) -> None:
        """End the call: through the stream proxy, else from the SDK's final snapshot."""
        call = self._call
        if call is None:
            return
        try:
            if self._proxy is not None:
                self._proxy._end(None)
                return
            snapshot = getattr(self._stream, "current_message_snapshot", None)
            if snapshot is not None and call.record is not None:
                self._spec.on_response(call.record, snapshot)
        except Exception as exc:
            _note_error("stream helper end", exc)
        call.finish(None)

    def __enter__(self) -> Any:
        self._begin()
        try:
            stream = self._inner.__enter__()
        except BaseException as exc:
            self._failed(exc)
            raise
        return self._entered(stream)

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._inner.__exit__(*exc_info)
        finally:
            self._exited()

    async def __aenter__(self) -> Any:
        self._begin()
        try:
            stream = await self._inner.__aenter__()
        except BaseException as exc:
            self._failed(exc)
            raise
        return self._entered(stream)

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._inner.__aexit__(*exc_info)
        finally:
            self._exited()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def wrap_stream_helper(original: Callable[..., Any], spec: WrapSpec) -> Callable[..., Any]:
    """Return ``original`` (a method returning a stream manager) answering a recording proxy."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        manager = original(*args, **kwargs)
        try:
            return StreamManagerProxy(manager, spec, kwargs)
        except Exception as exc:
            _note_error("stream helper", exc)
            return manager

    return wrapper
