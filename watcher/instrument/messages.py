"""Messages in the GenAI conventions' structure: roles, text, tool calls and tool results.

This module owns turning a request's messages and a response's choices (OpenAI chat, Anthropic
messages) into the ``gen_ai.input.messages`` / ``gen_ai.output.messages`` structure
(``[{"role", "parts": [{"type": "text", "content"} | {"type": "tool_call", "id", "name",
"arguments"} | {"type": "tool_call_response", "id", "response"}], "finish_reason"?}]``) and
redacting every text in it (contents, tool arguments, tool results) before it is serialised. Parts
it does not know (images, audio, files) keep their type and lose their data. It runs only with
content capture on, on the hooks' background thread. It does not own the redactor (``redact``) nor
deciding to capture (``hooks``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .access import get

Message = dict[str, Any]
Scrub = Callable[[str | None], str | None]
_MAX_MESSAGES = 200


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _content_parts(content: Any) -> list[dict[str, Any]]:
    """Return the parts of an OpenAI or Anthropic message ``content`` (a string or a list of blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list | tuple) else [content]:
        kind = str(get(block, "type") or "")
        if kind in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": str(get(block, "text") or "")})
        elif kind == "tool_use":  # Anthropic: the model asks for a tool
            parts.append(
                {
                    "type": "tool_call",
                    "id": get(block, "id"),
                    "name": get(block, "name"),
                    "arguments": get(block, "input"),
                }
            )
        elif kind == "tool_result":  # Anthropic: the application answers it
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": get(block, "tool_use_id"),
                    "response": get(block, "content"),
                }
            )
        elif kind == "thinking":
            parts.append({"type": "reasoning", "content": str(get(block, "thinking") or "")})
        elif kind:
            parts.append({"type": kind})  # images, audio, files: the kind, not the data
    return parts


def _openai_tool_calls(calls: Any) -> list[dict[str, Any]]:
    return [
        {
            "type": "tool_call",
            "id": get(call, "id"),
            "name": get(call, "function", "name"),
            "arguments": get(call, "function", "arguments"),
        }
        for call in calls or ()
    ]


def openai_input(kwargs: Mapping[str, Any]) -> list[Message] | None:
    """Return the chat request's ``messages`` in the conventions' structure (None without any)."""
    messages = kwargs.get("messages")
    if not isinstance(messages, list | tuple):
        return None
    out: list[Message] = []
    for m in list(messages)[:_MAX_MESSAGES]:
        role = str(get(m, "role") or "user")
        if role == "tool":
            parts = [
                {"type": "tool_call_response", "id": get(m, "tool_call_id"), "response": get(m, "content")}
            ]
        else:
            parts = _content_parts(get(m, "content")) + _openai_tool_calls(get(m, "tool_calls"))
        out.append({"role": "system" if role == "developer" else role, "parts": parts})
    return out


def openai_output(resp: Any) -> list[Message] | None:
    """Return a chat completion's choices as output messages (None when it has none)."""
    choices = get(resp, "choices")
    if not choices:
        return None
    out: list[Message] = []
    for choice in choices:
        message = get(choice, "message")
        parts = _content_parts(get(message, "content")) + _openai_tool_calls(get(message, "tool_calls"))
        refusal = get(message, "refusal")
        if refusal:
            parts.append({"type": "text", "content": str(refusal)})
        out.append({"role": "assistant", "parts": parts, "finish_reason": get(choice, "finish_reason") or ""})
    return out


def anthropic_input(kwargs: Mapping[str, Any]) -> list[Message] | None:
    """Return an Anthropic request's ``system`` and ``messages`` in the conventions' structure."""
    messages = kwargs.get("messages")
    if not isinstance(messages, list | tuple):
        return None
    out: list[Message] = []
    system = kwargs.get("system")
    if system:
        out.append({"role": "system", "parts": _content_parts(system)})
    for m in list(messages)[:_MAX_MESSAGES]:
        parts = _content_parts(get(m, "content"))
        role = (
            "tool"
            if parts and all(p["type"] == "tool_call_response" for p in parts)
            else str(get(m, "role") or "user")
        )
        out.append({"role": role, "parts": parts})
    return out


def anthropic_output(resp: Any) -> list[Message] | None:
    """Return an Anthropic message response as one output message."""
    content = get(resp, "content")
    if content is None:
        return None
    return [
        {
            "role": "assistant",
            "parts": _content_parts(content),
            "finish_reason": get(resp, "stop_reason") or "",
        }
    ]


def text_message(role: str, text: str) -> list[Message]:
    """Return one message with one text part (a prompt or a streamed response known only as text)."""
    return [{"role": role, "parts": [{"type": "text", "content": text}]}]


def redacted_json(messages: list[Message], scrub: Scrub) -> str:
    """Return ``messages`` as JSON with every text, tool argument and tool result passed through ``scrub``."""
    clean: list[Message] = []
    for message in messages:
        parts = []
        for part in message.get("parts", ()):
            kind = part.get("type")
            if kind in ("text", "reasoning"):
                parts.append({"type": kind, "content": scrub(_text(part.get("content"))) or ""})
            elif kind == "tool_call":
                parts.append(
                    {
                        "type": kind,
                        "id": _text(part.get("id")),
                        "name": _text(part.get("name")) or "",
                        "arguments": scrub(_text(part.get("arguments"))),
                    }
                )
            elif kind == "tool_call_response":
                parts.append(
                    {
                        "type": kind,
                        "id": _text(part.get("id")),
                        "response": scrub(_text(part.get("response"))),
                    }
                )
            else:
                parts.append({"type": str(kind)})
        out: Message = {"role": str(message.get("role", "")), "parts": parts}
        if "finish_reason" in message:
            out["finish_reason"] = str(message["finish_reason"])
        clean.append(out)
    return json.dumps(clean, ensure_ascii=False)
