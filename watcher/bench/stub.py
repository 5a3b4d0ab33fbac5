"""A local OpenAI-compatible stub server, for tests and ``watcher bench hooks``.

This module owns a small threaded HTTP server on loopback that answers
``POST /v1/chat/completions``, ``/v1/completions`` (legacy), ``/v1/embeddings`` (12 input tokens
per input) and ``/v1/responses`` as OpenAI does and ``POST /v1/messages`` as Anthropic does:
plain JSON, or Server-Sent Events when ``stream`` is true (chunked transfer, keep-alive), with a
final usage chunk when ``stream_options.include_usage`` is set (OpenAI chat and completions; the
others always report usage). The first content chunk is delayed by ``first_chunk_delay_s``
so that TTFT can be checked against a known value. The model name selects behaviours:
``*refuse*`` answers with a refusal, ``*filter*`` finishes with ``content_filter``, ``*error*``
answers HTTP 500. It does not own any instrumentation; it never talks to the internet.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ("The", " answer", " is", " forty", "-two", ".")
EMBEDDING_DIMENSIONS = 8
USAGE = {"prompt_tokens": 12, "completion_tokens": 6, "cached_tokens": 4, "reasoning_tokens": 2}


def _chat_usage() -> dict[str, Any]:
    return {
        "prompt_tokens": USAGE["prompt_tokens"],
        "completion_tokens": USAGE["completion_tokens"],
        "total_tokens": USAGE["prompt_tokens"] + USAGE["completion_tokens"],
        "prompt_tokens_details": {"cached_tokens": USAGE["cached_tokens"]},
        "completion_tokens_details": {"reasoning_tokens": USAGE["reasoning_tokens"]},
    }


def _responses_usage() -> dict[str, Any]:
    return {
        "input_tokens": USAGE["prompt_tokens"],
        "output_tokens": USAGE["completion_tokens"],
        "total_tokens": USAGE["prompt_tokens"] + USAGE["completion_tokens"],
        "input_tokens_details": {"cached_tokens": USAGE["cached_tokens"]},
        "output_tokens_details": {"reasoning_tokens": USAGE["reasoning_tokens"]},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay on chunks

    def do_POST(self) -> None:
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError):  # the client closed the stream early
            self.close_connection = True

    def _post(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.requests.append({"path": self.path, "body": body})
        model = str(body.get("model", ""))
        if "error" in model:
            return self._json({"error": {"message": "stub failure", "type": "server_error"}}, 500)
        if self.path.endswith("/chat/completions"):
            return self._chat(body, model)
        if self.path.endswith("/completions"):
            return self._completion(body, model)
        if self.path.endswith("/embeddings"):
            return self._embeddings(body, model)
        if self.path.endswith("/responses"):
            return self._responses(body, model)
        if self.path.endswith("/messages"):
            return self._messages(model, bool(body.get("stream")))
        return self._json({"error": {"message": f"no route {self.path}"}}, 404)

    def _json(self, payload: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _sse(self, data: str, event: str | None = None) -> None:
        text = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
        raw = text.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def _end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chat(self, body: dict[str, Any], model: str) -> None:
        rid, created = f"chatcmpl-{len(self.server.requests)}", int(time.time())
        refuse, filtered = "refuse" in model, "filter" in model
        finish = "content_filter" if filtered else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if refuse else "".join(WORDS)}
            if refuse:
                message["refusal"] = "I can't help with that."
            return self._json(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model + "-2025-01-01",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": _chat_usage(),
                }
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            return json.dumps(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model + "-2025-01-01",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }
            )

        self._start_sse()
        self._sse(chunk({"role": "assistant", "content": ""}))
        time.sleep(self.server.first_chunk_delay_s)
        if refuse:
            self._sse(chunk({"refusal": "I can't help with that."}))
        else:
            for word in WORDS:
                self._sse(chunk({"content": word}))
                time.sleep(self.server.chunk_delay_s)
        self._sse(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._sse(
                json.dumps(
                    {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model + "-2025-01-01",
                        "choices": [],
                        "usage": _chat_usage(),
                    }
                )
            )
        self._sse("[DONE]")
        self._end_sse()

    def _completion(self, body: dict[str, Any], model: str) -> None:
        """Answer the legacy ``/v1/completions`` (``text_completion``), streamed or not."""
        rid, created = f"cmpl-{len(self.server.requests)}", int(time.time())
        finish = "content_filter" if "filter" in model else "stop"

        def completion(text: str, finish_reason: str | None, usage: bool) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model + "-2025-01-01",
                "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
                **({"usage": _chat_usage()} if usage else {}),
            }

        if not body.get("stream"):
            return self._json(completion("".join(WORDS), finish, True))
        self._start_sse()
        time.sleep(self.server.first_chunk_delay_s)
        for word in WORDS:
            self._sse(json.dumps(completion(word, None, False)))
            time.sleep(self.server.chunk_delay_s)
        self._sse(json.dumps(completion("", finish, False)))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._sse(json.dumps({**completion("", None, True), "choices": []}))
        self._sse("[DONE]")
        self._end_sse()

    def _embeddings(self, body: dict[str, Any], model: str) -> None:
        """Answer ``/v1/embeddings``: one small vector per input, as floats or base64 float32."""
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        dims = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        data = []
        for i, _ in enumerate(texts):
            vector = [round(0.01 * (i + 1) * (d + 1), 4) for d in range(dims)]
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = USAGE["prompt_tokens"] * len(texts)
        self._json(
            {
                "object": "list",
                "data": data,
                "model": model + "-2025-01-01",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _response_object(self, model: str, status: str, text: str, refuse: bool) -> dict[str, Any]:
        part = (
            {"type": "refusal", "refusal": "I can't help with that."}
            if refuse
            else {"type": "output_text", "text": text, "annotations": []}
        )
        return {
            "id": f"resp_{len(self.server.requests)}",
            "object": "response",
            "created_at": int(time.time()),
            "model": model + "-2025-01-01",
            "status": status,
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [part],
                }
            ]
            if status != "in_progress"
            else [],
            "usage": _responses_usage() if status != "in_progress" else None,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "incomplete_details": {"reason": "content_filter"} if status == "incomplete" else None,
        }

    def _responses(self, body: dict[str, Any], model: str) -> None:
        refuse, filtered = "refuse" in model, "filter" in model
        status = "incomplete" if filtered else "completed"
        text = "".join(WORDS)
        if not body.get("stream"):
            return self._json(self._response_object(model, status, text, refuse))
        self._start_sse()
        seq = iter(range(1_000_000))
        created = self._response_object(model, "in_progress", "", False)
        self._sse(
            json.dumps({"type": "response.created", "sequence_number": next(seq), "response": created}),
            "response.created",
        )
        # The SDK's ``responses.stream()`` helper needs the item and the part before their deltas.
        item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}
        self._sse(
            json.dumps(
                {
                    "type": "response.output_item.added",
                    "sequence_number": next(seq),
                    "output_index": 0,
                    "item": item,
                }
            ),
            "response.output_item.added",
        )
        part = (
            {"type": "refusal", "refusal": ""}
            if refuse
            else {"type": "output_text", "text": "", "annotations": []}
        )
        self._sse(
            json.dumps(
                {
                    "type": "response.content_part.added",
                    "sequence_number": next(seq),
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "part": part,
                }
            ),
            "response.content_part.added",
        )
        time.sleep(self.server.first_chunk_delay_s)
        if refuse:
            self._sse(
                json.dumps(
                    {
                        "type": "response.refusal.delta",
                        "sequence_number": next(seq),
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": "I can't help with that.",
                    }
                ),
                "response.refusal.delta",
            )
        else:
            for word in WORDS:
                self._sse(
                    json.dumps(
                        {
                            "type": "response.output_text.delta",
                            "sequence_number": next(seq),
                            "item_id": "msg_1",
                            "output_index": 0,
                            "content_index": 0,
                            "delta": word,
                            "logprobs": [],
                        }
                    ),
                    "response.output_text.delta",
                )
                time.sleep(self.server.chunk_delay_s)
        final = self._response_object(model, status, text, refuse)
        kind = "response.incomplete" if filtered else "response.completed"
        self._sse(json.dumps({"type": kind, "sequence_number": next(seq), "response": final}), kind)
        self._end_sse()

    def _messages(self, model: str, stream: bool) -> None:
        """Answer as Anthropic's Messages API: 12 input tokens of which 4 cache reads, 6 output."""
        mid, stop = f"msg_{len(self.server.requests)}", "refusal" if "refuse" in model else "end_turn"
        usage = {"input_tokens": 8, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}
        message: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model + "-20250514",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        text = "" if stop == "refusal" else "".join(WORDS)
        if not stream:
            content = [{"type": "text", "text": text}] if text else []
            return self._json(
                {**message, "content": content, "stop_reason": stop, "usage": {**usage, "output_tokens": 6}}
            )

        def event(kind: str, **data: Any) -> None:
            self._sse(json.dumps({"type": kind, **data}), kind)

        self._start_sse()
        event("message_start", message=message)
        event("content_block_start", index=0, content_block={"type": "text", "text": ""})
        time.sleep(self.server.first_chunk_delay_s)
        for word in WORDS if text else ():
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": word})
            time.sleep(self.server.chunk_delay_s)
        event("content_block_stop", index=0)
        event("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage={"output_tokens": 6})
        event("message_stop")
        self._end_sse()


class StubServer(ThreadingHTTPServer):
    """The stub on a free loopback port; ``base_url`` is what ``OpenAI(base_url=...)`` takes."""

    daemon_threads = True

    def __init__(self, first_chunk_delay_s: float = 0.0, chunk_delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.first_chunk_delay_s = first_chunk_delay_s
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, name="openai-stub", daemon=True)

    @property
    def base_url(self) -> str:
        """Return ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def root_url(self) -> str:
        """Return ``http://127.0.0.1:PORT`` (what ``Anthropic(base_url=...)`` takes)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


def main() -> None:
    """Serve the stub until terminated; print its ``base_url`` first (the hooks benchmark's server)."""
    with StubServer() as server:
        print(server.base_url, flush=True)
        threading.Event().wait()  # until SIGTERM


if __name__ == "__main__":
    main()
