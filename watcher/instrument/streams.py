"""Proxies around a vendor's response stream that end the call when the stream ends.

This module owns the stream side of a wrapped call: every item passes through the provider's
``on_item`` (which fills the ``CallRecord``: first token, text, usage); an item the wrapper asked
for on its own (OpenAI's usage chunk) is kept from the application (``hidden``); the call is finished
exactly once, at exhaustion, on an error from the stream, on ``close()``, on leaving a ``with``
block, or when the stream is garbage-collected unread. The proxy delegates everything else to
the vendor stream. It does not own reading items (the wrappers) nor the call (``call``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .call import _LLMCall
from .hooks import _note_error
from .record import CallRecord


class StreamState:
    """What a stream has said so far: its text and whether it reported usage."""

    __slots__ = ("parts", "prompt", "usage_seen", "want_prompt")

    def __init__(self, prompt: Callable[[], str | None], want_prompt: bool = False) -> None:
        self.parts: list[str] = []
        self.usage_seen = False
        self.prompt = prompt
        self.want_prompt = want_prompt

    def text(self) -> str:
        """Return the text streamed so far."""
        return "".join(self.parts)


OnItem = Callable[[CallRecord, Any, StreamState], None]


def estimate_tokens(text: str | None) -> int:
    """Estimate a token count from text (about four characters per token)."""
    return math.ceil(len(text) / 4) if text else 0


def settle(rec: CallRecord, state: StreamState, *, want_text: bool) -> None:
    """Fill the record at the end of a stream: text, and estimated tokens when none were reported."""
    text = state.text()
    if want_text and rec.response is None:
        rec.response = text
    if not state.usage_seen:
        prompt = state.prompt()
        rec.input_tokens = estimate_tokens(prompt)
        rec.output_tokens = estimate_tokens(text)
        rec.tokens_estimated = True
    if state.want_prompt and rec.prompt is None:
        rec.prompt = state.prompt()


class _Base:
    def __init__(
        self,
        inner: Any,
        call: _LLMCall,
        on_item: OnItem,
        state: StreamState,
        want_text: bool,
        hidden: Callable[[Any], bool] | None = None,
    ) -> None:
        self._inner = inner
        self._call = call
        self._on_item = on_item
        self._state = state
        self._want_text = want_text
        self._hidden = hidden
        self._ended = False

    def _item(self, item: Any) -> bool:
        """Read one item into the record; return whether the application sees it."""
        rec = self._call.record
        if rec is not None:
            try:
                self._on_item(rec, item, self._state)
            except Exception as exc:
                _note_error("stream item", exc)
        if self._hidden is None:
            return True
        try:
            return not self._hidden(item)
        except Exception as exc:
            _note_error("stream item", exc)
            return True

    def _end(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        rec = self._call.record
        fill = None if rec is None else functools.partial(settle, rec, self._state, want_text=self._want_text)
        self._call.finish(exc, fill)  # the text and token estimates are read on the finisher's thread

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self._end(None)


class SyncStreamProxy(_Base):
    """A synchronous stream (``for chunk in stream``) that ends its call when it ends."""

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                item = next(self._inner)
            except StopIteration:
                self._end(None)
                raise
            except BaseException as exc:
                self._end(exc)
                raise
            if self._item(item):
                return item

    def __enter__(self) -> SyncStreamProxy:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """End the call (the text so far counts) and close the vendor stream."""
        self._end(None)
        close = getattr(self._inner, "close", None)
        if callable(close):
            close()


class AsyncStreamProxy(_Base):
    """An asynchronous stream (``async for chunk in stream``) that ends its call when it ends."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self._inner.__anext__()
            except StopAsyncIteration:
                self._end(None)
                raise
            except BaseException as exc:
                self._end(exc)
                raise
            if self._item(item):
                return item

    async def __aenter__(self) -> AsyncStreamProxy:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """End the call (the text so far counts) and close the vendor stream."""
        self._end(None)
        close = getattr(self._inner, "close", None)
        if callable(close):
            await close()
