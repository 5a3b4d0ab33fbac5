"""``instrument_openai(client)``: hooks on an OpenAI-compatible client, without importing ``openai``.

This module owns reading OpenAI's shapes: ``chat.completions.create`` (a ``ChatCompletion``, or
``ChatCompletionChunk`` items whose last one carries ``usage`` when
``stream_options.include_usage`` is on) and ``responses.create`` (a ``Response``, or typed
events: ``response.output_text.delta`` … ``response.completed``/``incomplete``/``failed``). TTFT is
the first chunk with content (text, refusal or tool-call arguments). Refusals: ``finish_reason``
``content_filter``, the message's ``refusal`` field, refusal output parts, ``incomplete_details``
with ``content_filter``, and the phrase classifier (``call``). Works on ``OpenAI`` and
``AsyncOpenAI`` and anything shaped like them (Azure, vLLM, Ollama, LiteLLM proxies). It does not
own the generic wrapping (``wrap``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from .messages import openai_input, openai_output
from .record import CallRecord
from .streams import StreamState
from .wrap import WrapSpec, get, patch, rebuild_variants, server_of, unpatch

_PARAMS: Final = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "stop": "stop",
    "seed": "seed",
    "n": "n",
    "stream": "stream",
}
_SENTINELS: Final = frozenset({"Omit", "NotGiven"})
_INCOMPLETE: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _given(value: Any) -> bool:
    """Tell whether a keyword was really given: the SDK's helpers pass ``omit``/``NOT_GIVEN``."""
    return value is not None and type(value).__name__ not in _SENTINELS


def _params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in _PARAMS.items():
        value = kwargs.get(key)
        if _given(value):
            out[name] = [value] if key == "stop" and isinstance(value, str) else value
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(get(p, "text") or "") for p in content if get(p, "text"))
    return ""


def _chat_prompt(kwargs: Mapping[str, Any]) -> str | None:
    messages = kwargs.get("messages")
    if not isinstance(messages, list):
        return None
    return "\n".join(f"{get(m, 'role')}: {_text_of(get(m, 'content'))}" for m in messages)


def _responses_prompt(kwargs: Mapping[str, Any]) -> str | None:
    inp = kwargs.get("input")
    parts = [str(kwargs["instructions"])] if kwargs.get("instructions") else []
    if isinstance(inp, str):
        parts.append(inp)
    elif isinstance(inp, list):
        parts += [f"{get(m, 'role') or 'user'}: {_text_of(get(m, 'content'))}" for m in inp]
    return "\n".join(parts) if parts else None


def _chat_usage(rec: CallRecord, usage: Any) -> None:
    rec.input_tokens = get(usage, "prompt_tokens") or 0
    rec.output_tokens = get(usage, "completion_tokens") or 0
    rec.cached_tokens = get(usage, "prompt_tokens_details", "cached_tokens") or 0
    rec.reasoning_tokens = get(usage, "completion_tokens_details", "reasoning_tokens") or 0


def _finish_reason(rec: CallRecord, reason: Any) -> None:
    if reason and rec.finish_reason != "content_filter":  # any filtered choice marks the call
        rec.finish_reason = str(reason)


def _chat_response(rec: CallRecord, resp: Any) -> None:
    rec.response_model = get(resp, "model")
    rec.response_id = get(resp, "id")
    usage = get(resp, "usage")
    if usage is not None:
        _chat_usage(rec, usage)
    texts: list[str] = []
    for choice in get(resp, "choices") or ():
        _finish_reason(rec, get(choice, "finish_reason"))
        if get(choice, "message", "refusal"):
            rec.refused = True
        content = get(choice, "message", "content")
        if isinstance(content, str):
            texts.append(content)
    rec.response = "\n".join(texts)


def _chat_item(rec: CallRecord, chunk: Any, state: StreamState) -> None:
    if rec.response_id is None:
        rec.response_id = get(chunk, "id")
        rec.response_model = get(chunk, "model")
    for choice in get(chunk, "choices") or ():
        delta = get(choice, "delta")
        content = get(delta, "content")
        if content:
            rec.first_token()
            state.parts.append(content)
        if get(delta, "refusal"):
            rec.first_token()
            rec.refused = True
        if get(delta, "tool_calls"):
            rec.first_token()
        _finish_reason(rec, get(choice, "finish_reason"))
    usage = get(chunk, "usage")
    if usage is not None:
        state.usage_seen = True
        _chat_usage(rec, usage)


def _include_usage(kwargs: dict[str, Any]) -> None:
    if kwargs.get("stream") is True and not _given(kwargs.get("stream_options")):
        kwargs["stream_options"] = {"include_usage": True}


def _responses_response(rec: CallRecord, resp: Any) -> None:
    rec.response_model = get(resp, "model")
    rec.response_id = get(resp, "id")
    usage = get(resp, "usage")
    if usage is not None:
        rec.input_tokens = get(usage, "input_tokens") or 0
        rec.output_tokens = get(usage, "output_tokens") or 0
        rec.cached_tokens = get(usage, "input_tokens_details", "cached_tokens") or 0
        rec.reasoning_tokens = get(usage, "output_tokens_details", "reasoning_tokens") or 0
    status = get(resp, "status")
    if status == "completed":
        rec.finish_reason = "stop"
    elif status == "incomplete":
        reason = get(resp, "incomplete_details", "reason")
        rec.finish_reason = _INCOMPLETE.get(str(reason), str(reason or "incomplete"))
    elif status:
        rec.finish_reason = str(status)
    texts: list[str] = []
    for item in get(resp, "output") or ():
        for part in get(item, "content") or ():
            kind = get(part, "type")
            if kind == "refusal":
                rec.refused = True
            elif kind == "output_text" and get(part, "text"):
                texts.append(get(part, "text"))
    if rec.response is None:
        rec.response = "".join(texts)


def _responses_item(rec: CallRecord, event: Any, state: StreamState) -> None:
    kind = get(event, "type")
    if kind == "response.output_text.delta":
        rec.first_token()
        state.parts.append(str(get(event, "delta") or ""))
    elif kind in ("response.refusal.delta", "response.refusal.done"):
        rec.first_token()
        rec.refused = True
    elif kind == "response.function_call_arguments.delta":
        rec.first_token()
    elif kind in ("response.completed", "response.incomplete", "response.failed", "response.created"):
        resp = get(event, "response")
        if resp is not None:
            if kind != "response.created":
                state.usage_seen = get(resp, "usage") is not None
                rec.response = state.text()
            _responses_response(rec, resp)


def chat_spec(provider: str = "openai", *, include_usage: bool = False) -> WrapSpec:
    """Return the spec of ``chat.completions.create``."""
    return WrapSpec(
        provider,
        "chat",
        _params,
        _chat_prompt,
        _chat_response,
        _chat_item,
        _include_usage if include_usage else None,
        input_messages=openai_input,
        output_messages=openai_output,
    )


def responses_spec(provider: str = "openai") -> WrapSpec:
    """Return the spec of ``responses.create``."""
    return WrapSpec(provider, "chat", _params, _responses_prompt, _responses_response, _responses_item)


_VARIANTS: Final = ("with_raw_response", "with_streaming_response")


def instrument_openai(client: Any, *, provider: str = "openai", include_usage: bool = False) -> Any:
    """Instrument an ``OpenAI``/``AsyncOpenAI`` client in place and return it (idempotent).

    Wraps ``chat.completions.create`` and ``parse`` and, where present, ``responses.create`` and
    ``parse``; the SDK's ``stream(...)`` helpers call ``create`` and so are covered, as are the
    ``with_raw_response`` and ``with_streaming_response`` views (rebuilt around the wrapped
    methods: a view fetched before instrumenting and kept stays uninstrumented). A streamed chat
    call reports usage only when asked (``stream_options={"include_usage": True}``); with
    ``include_usage=True`` the wrapper asks for it when the caller did not (the last chunk then
    has no choices: code indexing ``chunk.choices[0]`` must check). Otherwise tokens are
    estimated from the text and flagged. ``provider`` names the backend (``azure.ai.openai``,
    ``vllm``...).
    """
    server = server_of(client)
    chat = get(client, "chat", "completions")
    if chat is not None:
        spec = replace(chat_spec(provider, include_usage=include_usage), server=server)
        patch(chat, "create", spec)
        patch(chat, "parse", spec)
        rebuild_variants(chat, _VARIANTS)
    responses = get(client, "responses")
    if responses is not None:
        spec = replace(responses_spec(provider), server=server)
        patch(responses, "create", spec)
        patch(responses, "parse", spec)
        rebuild_variants(responses, _VARIANTS)
    return client


def uninstrument_openai(client: Any) -> None:
    """Restore the client's original methods."""
    for resource in (get(client, "chat", "completions"), get(client, "responses")):
        if resource is not None:
            unpatch(resource, "create")
            unpatch(resource, "parse")
            rebuild_variants(resource, _VARIANTS)
