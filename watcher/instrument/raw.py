"""Raw-response variants of a wrapped call: ``with_raw_response`` and ``with_streaming_response``.

OpenAI-style SDKs return, for these variants, a response object (``LegacyAPIResponse``,
``APIResponse``, ``AsyncAPIResponse``: ``http_response``, headers, and ``parse()`` for the
typed result) instead of the result. This module owns recognising such an object and
recording the call from it: a legacy response whose body is already read is parsed at once
(``parse()`` caches, so the application's own ``parse()`` returns the same object); otherwise the
application gets a proxy whose ``parse()`` records the result (or, for ``stream=True``, returns
the stream wrapped so that the call ends with it) and whose ``close()`` ends the call with
what is known. Everything else is delegated. Nothing here raises into the application except
the vendor's own exceptions. It does not own reading results (the wrappers) nor streams
(``streams``).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from .call import _LLMCall
from .hooks import _note_error

OnParsed = Callable[[Any], Any]
"""Record a parsed result; return what the application gets (the result, or a stream proxy)."""


def is_raw_response(result: Any) -> bool:
    """Tell whether ``result`` is an SDK raw-response object rather than the typed result."""
    try:  # an instance attribute of theirs; a dict lookup keeps the common case cheap
        return "http_response" in getattr(result, "__dict__", ()) and callable(getattr(result, "parse", None))
    except Exception:  # an exotic object whose attributes raise: treat it as a result
        return False


def _body_read(result: Any) -> bool:
    """Tell whether the HTTP body is already in memory (the legacy, non-streaming variant)."""
    try:
        response = result.http_response
        return bool(getattr(response, "is_closed", False)) and not inspect.iscoroutinefunction(result.parse)
    except Exception:
        return False


def wrap_raw(result: Any, call: _LLMCall, on_parsed: OnParsed, stream: bool) -> Any:
    """Return what the application gets for a raw response: ``result`` or a proxy of it.

    Called in the wrapper's context: a call that goes on after the method returns leaves it.
    """
    if not stream and _body_read(result):
        try:
            on_parsed(result.parse())
        except Exception as exc:
            _note_error("raw response", exc)
            call.finish(None)
        return result
    call.detach()
    if inspect.iscoroutinefunction(getattr(result, "parse", None)):
        return AsyncRawResponseProxy(result, call, on_parsed)
    return RawResponseProxy(result, call, on_parsed)


class _Base:
    def __init__(self, inner: Any, call: _LLMCall, on_parsed: OnParsed) -> None:
        self._inner = inner
        self._call = call
        self._on_parsed = on_parsed
        self._delivered: Any = None
        self._parsed = False

    def _deliver(self, parsed: Any) -> Any:
        if self._parsed:
            return self._delivered
        self._parsed = True
        try:
            self._delivered = self._on_parsed(parsed)
        except Exception as exc:
            _note_error("raw response", exc)
            self._delivered = parsed
            self._call.finish(None)
        return self._delivered

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)

    def __del__(self) -> None:
        # Dropped unparsed: end the call with what is known. Once parsed, the delivered result
        # (a stream proxy) ends it: ``create(...).parse()`` drops this object at once.
        if not self._parsed:
            with contextlib.suppress(Exception):  # never raise from a finaliser
                self._call.finish(None)


class RawResponseProxy(_Base):
    """A synchronous raw response whose ``parse()`` records the call."""

    def parse(self, *, to: Any = None) -> Any:
        """Return the typed result (the instrumented stream for ``stream=True``)."""
        if to is not None:  # a caller-chosen type: not ours to read
            return self._inner.parse(to=to)
        try:
            parsed = self._inner.parse()
        except BaseException as exc:
            self._call.finish(exc)
            raise
        return self._deliver(parsed)

    def close(self) -> None:
        """End the call with what is known (unless a parsed stream still runs) and close."""
        if not self._parsed:
            self._call.finish(None)
        self._inner.close()


class AsyncRawResponseProxy(_Base):
    """An asynchronous raw response (``await response.parse()``) that records the call."""

    async def parse(self, *, to: Any = None) -> Any:
        """Return the typed result (the instrumented stream for ``stream=True``)."""
        if to is not None:
            return await self._inner.parse(to=to)
        try:
            parsed = await self._inner.parse()
        except BaseException as exc:
            self._call.finish(exc)
            raise
        return self._deliver(parsed)

    async def close(self) -> None:
        """End the call with what is known (unless a parsed stream still runs) and close."""
        if not self._parsed:
            self._call.finish(None)
        await self._inner.close()
