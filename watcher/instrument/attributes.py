"""Span attribute names the hooks set, as string constants.

This module owns the names only. The GenAI semantic conventions (status Development) are
copied here because the ``opentelemetry-semantic-conventions`` package exposes them only under a
private, deprecated path; ``watcher.*`` names are our own. It does not own values or spans
(``hooks``).
"""

from __future__ import annotations

from typing import Final

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"
"""Deprecated for ``gen_ai.provider.name``; emitted only when asked for (old dashboards)."""

GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_PREFIX: Final = "gen_ai.request."
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_REQUEST_ENCODING_FORMATS: Final = "gen_ai.request.encoding_formats"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"

GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
"""Seconds from the request to the first chunk of a streamed response (the hooks: first content)."""
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"

GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""Opt-in (content capture), redacted, JSON: ``[{"role", "parts": [{"type": "text", "content"}]}]``."""
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"

GEN_AI_EVALUATION_RESULT: Final = "gen_ai.evaluation.result"
"""The event name of one evaluation result on a span."""
GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"

ERROR_TYPE: Final = "error.type"

WATCHER_TENANT: Final = "watcher.tenant"
WATCHER_FEATURE: Final = "watcher.feature"
WATCHER_PROMPT_VERSION: Final = "watcher.prompt_version"
WATCHER_OUTCOME: Final = "watcher.outcome"
WATCHER_COST_USD: Final = "watcher.cost_usd"
WATCHER_COST_KNOWN: Final = "watcher.cost_known"
"""Set (to false) only when the model has no price: its cost 0 is not a real cost."""
WATCHER_TOKENS_ESTIMATED: Final = "watcher.tokens_estimated"
WATCHER_TTFT_S: Final = "watcher.ttft_s"
"""Deprecated for ``gen_ai.response.time_to_first_chunk``: not emitted (the OTLP receiver reads both)."""

REQUEST_PARAM_ATTRIBUTES: Final[dict[str, str]] = {
    "temperature": GEN_AI_REQUEST_TEMPERATURE,
    "max_tokens": GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": GEN_AI_REQUEST_MAX_TOKENS,
    "top_p": GEN_AI_REQUEST_TOP_P,
    "top_k": GEN_AI_REQUEST_TOP_K,
    "frequency_penalty": GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": GEN_AI_REQUEST_PRESENCE_PENALTY,
    "stop": GEN_AI_REQUEST_STOP_SEQUENCES,
    "stop_sequences": GEN_AI_REQUEST_STOP_SEQUENCES,
    "seed": GEN_AI_REQUEST_SEED,
    "n": GEN_AI_REQUEST_CHOICE_COUNT,
    "dimensions": GEN_AI_EMBEDDINGS_DIMENSION_COUNT,
}
"""Request keyword → attribute name where the convention's name differs from ``gen_ai.request.<kw>``."""


def request_attribute(param: str) -> str:
    """Return the span attribute name for the request parameter ``param``."""
    return REQUEST_PARAM_ATTRIBUTES.get(param, GEN_AI_REQUEST_PREFIX + param)


# Retrieval spans (the conventions' ``retrieval`` operation; span kind INTERNAL).
GEN_AI_DATA_SOURCE_ID: Final = "gen_ai.data_source.id"
"""The retriever or index the documents came from (watcher's ``retriever``)."""
GEN_AI_RETRIEVAL_TOP_K: Final = "gen_ai.retrieval.top_k"
GEN_AI_RETRIEVAL_QUERY_TEXT: Final = "gen_ai.retrieval.query.text"
"""Opt-in (content capture), redacted."""
GEN_AI_RETRIEVAL_DOCUMENTS: Final = "gen_ai.retrieval.documents"
"""JSON on spans: ``[{"id": "doc_123", "score": 0.95}, ...]`` in the retriever's order."""
WATCHER_RETRIEVAL_RETURNED: Final = "watcher.retrieval.returned"
"""How many documents came back (also when they have no ids worth recording)."""
