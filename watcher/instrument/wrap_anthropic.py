"""``instrument_anthropic(client)``: hooks on an Anthropic-style client, without importing ``anthropic``.

This module owns reading the Messages API shapes: ``messages.create`` returns a ``Message``
(``content`` blocks, ``stop_reason``, ``usage`` with ``input_tokens``, ``output_tokens``,
``cache_read_input_tokens``, ``cache_creation_input_tokens``) or, with ``stream=True``, events:
``message_start`` (id, model, input usage), ``content_block_delta`` (``text_delta``,
``input_json_delta``, ``thinking_delta``), ``message_delta`` (``stop_reason``, cumulative output
usage), ``message_stop``. TTFT is the first text or tool-input delta. Anthropic counts cached
input apart from ``input_tokens``; here input tokens include cache reads and writes (as OpenAI
counts them) and cache reads are ``cached_tokens``. ``stop_reason`` ``refusal`` is a refusal. It
does not own the generic wrapping (``wrap``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from .managers import wrap_stream_helper
from .messages import anthropic_input, anthropic_output
from .record import CallRecord
from .streams import StreamState
from .wrap import WrapSpec, get, patch, rebuild_variants, server_of, unpatch

_PARAMS: Final = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_tokens",
    "stop_sequences": "stop_sequences",
    "stream": "stream",
}


def _params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {name: kwargs[key] for key, name in _PARAMS.items() if kwargs.get(key) is not None}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(str(get(b, "text")) for b in content or () if get(b, "type") == "text" and get(b, "text"))


def _prompt(kwargs: Mapping[str, Any]) -> str | None:
    parts = [f"system: {_text(kwargs['system'])}"] if kwargs.get("system") else []
    parts += [f"{get(m, 'role')}: {_text(get(m, 'content'))}" for m in kwargs.get("messages") or ()]
    return "\n".join(parts) if parts else None


def _usage(rec: CallRecord, usage: Any, *, output_only: bool = False) -> None:
    out = get(usage, "output_tokens")
    if out is not None:
        rec.output_tokens = out
    if output_only:
        return
    read = get(usage, "cache_read_input_tokens") or 0
    write = get(usage, "cache_creation_input_tokens") or 0
    rec.input_tokens = (get(usage, "input_tokens") or 0) + read + write
    rec.cached_tokens = read
    rec.cache_creation_tokens = write


def _stop(rec: CallRecord, reason: Any) -> None:
    if reason:
        rec.finish_reason = str(reason)
        if reason == "refusal":
            rec.refused = True


def _response(rec: CallRecord, msg: Any) -> None:
    rec.response_id = get(msg, "id")
    rec.response_model = get(msg, "model")
    usage = get(msg, "usage")
    if usage is not None:
        _usage(rec, usage)
    _stop(rec, get(msg, "stop_reason"))
    rec.response = _text(get(msg, "content"))


def _item(rec: CallRecord, event: Any, state: StreamState) -> None:
    kind = get(event, "type")
    if kind == "content_block_delta":
        delta = get(event, "delta")
        dtype = get(delta, "type")
        if dtype == "text_delta":
            rec.first_token()
            state.parts.append(str(get(delta, "text") or ""))
        elif dtype in ("input_json_delta", "thinking_delta"):
            rec.first_token()
    elif kind == "message_start":
        msg = get(event, "message")
        rec.response_id = get(msg, "id")
        rec.response_model = get(msg, "model")
        usage = get(msg, "usage")
        if usage is not None:
            state.usage_seen = True
            _usage(rec, usage)
    elif kind == "message_delta":
        _stop(rec, get(event, "delta", "stop_reason"))
        usage = get(event, "usage")
        if usage is not None:
            state.usage_seen = True
            _usage(rec, usage, output_only=get(usage, "input_tokens") is None)


def messages_spec(provider: str = "anthropic") -> WrapSpec:
    """Return the spec of ``messages.create``."""
    return WrapSpec(
        provider,
        "chat",
        _params,
        _prompt,
        _response,
        _item,
        input_messages=anthropic_input,
        output_messages=anthropic_output,
    )


_VARIANTS: Final = ("with_raw_response", "with_streaming_response")


def instrument_anthropic(client: Any, *, provider: str = "anthropic") -> Any:
    """Instrument an ``Anthropic``/``AsyncAnthropic`` client's messages in place; return it.

    Wraps ``messages.create``, ``messages.parse`` and the ``messages.stream(...)`` helper (its
    ``with`` block is the call: TTFT and usage come from the events, however they are read), and
    rebuilds the ``with_raw_response``/``with_streaming_response`` views around them.
    ``provider`` names the backend (``aws.bedrock``, ``gcp.vertex_ai`` for those clients).
    """
    messages = get(client, "messages")
    if messages is not None:
        spec = replace(messages_spec(provider), server=server_of(client))
        patch(messages, "create", spec)
        patch(messages, "parse", spec)
        patch(messages, "stream", spec, wrap_stream_helper)
        rebuild_variants(messages, _VARIANTS)
    return client


def uninstrument_anthropic(client: Any) -> None:
    """Restore the client's original ``messages`` methods."""
    messages = get(client, "messages")
    if messages is not None:
        for name in ("create", "parse", "stream"):
            unpatch(messages, name)
        rebuild_variants(messages, _VARIANTS)
