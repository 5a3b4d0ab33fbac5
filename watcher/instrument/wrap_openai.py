"""``instrument_openai(client)``: hooks on an OpenAI-compatible client, without importing ``openai``.

This module owns reading OpenAI's shapes: ``chat.completions.create`` (a ``ChatCompletion``, or
``ChatCompletionChunk`` items whose last one carries ``usage`` when
``stream_options.include_usage`` is on; the wrapper asks for it and hides that chunk), the legacy
``completions.create`` (``text_completion``, the same stream shape), ``embeddings.create``
(``embeddings``: input tokens only) and ``responses.create`` (a ``Response``, or typed
events: ``response.output_text.delta`` … ``response.completed``/``incomplete``/``failed``). TTFT is
the first chunk with content (text, refusal or tool-call arguments). Refusals: ``finish_reason``
``content_filter``, the message's ``refusal`` field, refusal output parts, ``incomplete_details``
with ``content_filter``, and the phrase classifier (``call``). Works on ``OpenAI`` and
``AsyncOpenAI`` and anything shaped like them (Azure, vLLM, Ollama, LiteLLM proxies). It does not
own the generic wrapping (``wrap``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
_RAW_HEADER: Final = "x-stainless-raw-response"
_EMBEDDING_PARAMS: Final = {"dimensions": "dimensions", "encoding_format": "encoding_formats"}


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


class _AskedUsage(dict[str, Any]):
    """``stream_options`` the wrapper added: the usage chunk it brings is ours, not the application's."""


def _raw_view(kwargs: Mapping[str, Any]) -> bool:
    """Tell whether the call comes through ``with_raw_response``/``with_streaming_response``.

    Those views hand the application the HTTP body itself, where an extra chunk cannot be hidden.
    """
    headers = kwargs.get("extra_headers")
    return isinstance(headers, Mapping) and any(str(k).lower() == _RAW_HEADER for k in headers)


def _include_usage(kwargs: dict[str, Any]) -> None:
    if kwargs.get("stream") is True and not _given(kwargs.get("stream_options")) and not _raw_view(kwargs):
        kwargs["stream_options"] = _AskedUsage(include_usage=True)


def _usage_only(chunk: Any) -> bool:
    return not get(chunk, "choices") and get(chunk, "usage") is not None


def _hide_asked_usage(kwargs: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    return _usage_only if isinstance(kwargs.get("stream_options"), _AskedUsage) else None


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


def chat_spec(provider: str = "openai", *, include_usage: bool = True) -> WrapSpec:
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
        hide=_hide_asked_usage if include_usage else None,
    )


def _completion_prompt(kwargs: Mapping[str, Any]) -> str | None:
    prompt = kwargs.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    return None  # token arrays: no text to capture or estimate from


def _completion_response(rec: CallRecord, resp: Any) -> None:
    rec.response_model = get(resp, "model")
    rec.response_id = get(resp, "id")
    usage = get(resp, "usage")
    if usage is not None:
        _chat_usage(rec, usage)
    texts: list[str] = []
    for choice in get(resp, "choices") or ():
        _finish_reason(rec, get(choice, "finish_reason"))
        text = get(choice, "text")
        if isinstance(text, str):
            texts.append(text)
    rec.response = "\n".join(texts)


def _completion_item(rec: CallRecord, chunk: Any, state: StreamState) -> None:
    if rec.response_id is None:
        rec.response_id = get(chunk, "id")
        rec.response_model = get(chunk, "model")
    for choice in get(chunk, "choices") or ():
        text = get(choice, "text")
        if text:
            rec.first_token()
            state.parts.append(text)
        _finish_reason(rec, get(choice, "finish_reason"))
    usage = get(chunk, "usage")
    if usage is not None:
        state.usage_seen = True
        _chat_usage(rec, usage)


def completions_spec(provider: str = "openai", *, include_usage: bool = True) -> WrapSpec:
    """Return the spec of the legacy ``completions.create`` (operation ``text_completion``)."""
    return WrapSpec(
        provider,
        "text_completion",
        _params,
        _completion_prompt,
        _completion_response,
        _completion_item,
        _include_usage if include_usage else None,
        hide=_hide_asked_usage if include_usage else None,
    )


def _embedding_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in _EMBEDDING_PARAMS.items():
        value = kwargs.get(key)
        if _given(value):
            out[name] = [value] if key == "encoding_format" else value
    return out


def _embedding_input(kwargs: Mapping[str, Any]) -> str | None:
    return _completion_prompt({"prompt": kwargs.get("input")})


def _embedding_response(rec: CallRecord, resp: Any) -> None:
    rec.response_model = get(resp, "model")
    usage = get(resp, "usage")
    if usage is not None:
        rec.input_tokens = get(usage, "prompt_tokens") or 0
    rec.output_tokens = 0
    rec.response = None  # vectors, not text: nothing to classify or capture


def _no_items(rec: CallRecord, item: Any, state: StreamState) -> None:
    """Embeddings never stream."""


def embeddings_spec(provider: str = "openai") -> WrapSpec:
    """Return the spec of ``embeddings.create`` (operation ``embeddings``)."""
    return WrapSpec(
        provider, "embeddings", _embedding_params, _embedding_input, _embedding_response, _no_items
    )


def responses_spec(provider: str = "openai") -> WrapSpec:
    """Return the spec of ``responses.create``."""
    return WrapSpec(provider, "chat", _params, _responses_prompt, _responses_response, _responses_item)


_VARIANTS: Final = ("with_raw_response", "with_streaming_response")


def instrument_openai(client: Any, *, provider: str = "openai", include_usage: bool = True) -> Any:
    """Instrument an ``OpenAI``/``AsyncOpenAI`` client in place and return it (idempotent).

    Wraps ``chat.completions.create`` and ``parse``, the legacy ``completions.create``
    (``text_completion``), ``embeddings.create`` and, where present, ``responses.create`` and
    ``parse``; the SDK's ``stream(...)`` helpers call ``create`` and so are covered, as are the
    ``with_raw_response`` and ``with_streaming_response`` views (rebuilt around the wrapped
    methods: a view fetched before instrumenting and kept stays uninstrumented). A streamed chat
    or completion call reports usage only when asked (``stream_options={"include_usage": True}``):
    with ``include_usage`` (the default) the wrapper asks for it when the caller did not, reads
    the extra usage-only chunk and keeps it from the application, which sees the stream it asked
    for (the raw-response views, which hand over the HTTP body, are left as the caller wrote
    them). A stream that still reports no usage (``include_usage=False``, or a backend that
    ignores the option) has its tokens estimated from the text and flagged
    (``tokens_estimated``). ``provider`` names the backend (``azure.ai.openai``, ``vllm``...).
    """
    server = server_of(client)
    chat = get(client, "chat", "completions")
    if chat is not None:
        spec = replace(chat_spec(provider, include_usage=include_usage), server=server)
        patch(chat, "create", spec)
        patch(chat, "parse", spec)
        rebuild_variants(chat, _VARIANTS)
    completions = get(client, "completions")
    if completions is not None:
        patch(
            completions,
            "create",
            replace(completions_spec(provider, include_usage=include_usage), server=server),
        )
        rebuild_variants(completions, _VARIANTS)
    embeddings = get(client, "embeddings")
    if embeddings is not None:
        patch(embeddings, "create", replace(embeddings_spec(provider), server=server))
        rebuild_variants(embeddings, _VARIANTS)
    responses = get(client, "responses")
    if responses is not None:
        spec = replace(responses_spec(provider), server=server)
        patch(responses, "create", spec)
        patch(responses, "parse", spec)
        rebuild_variants(responses, _VARIANTS)
    return client


def uninstrument_openai(client: Any) -> None:
    """Restore the client's original methods."""
    resources = (
        get(client, "chat", "completions"),
        get(client, "responses"),
        get(client, "completions"),
        get(client, "embeddings"),
    )
    for resource in resources:
        if resource is not None:
            unpatch(resource, "create")
            unpatch(resource, "parse")
            rebuild_variants(resource, _VARIANTS)
