"""The GenAI client metrics of the OpenTelemetry conventions, beside the Prometheus ``llm_*`` metrics.

This module owns three histograms on an OpenTelemetry ``MeterProvider`` (the global one unless
``configure(meter_provider=...)`` names one): ``gen_ai.client.token.usage`` (``{token}``, one
measurement per token type, ``gen_ai.token.type`` = ``input``/``output``),
``gen_ai.client.operation.duration`` (``s``, with ``error.type`` on failures) and
``gen_ai.client.operation.time_to_first_chunk`` (``s``, streamed calls only), with the attributes
and bucket boundaries the conventions advise. Recording happens on the finisher's thread. It does
not own the Prometheus metrics (``metrics``), which stay the source of exemplars.

The OpenTelemetry metrics API is imported with the first ``GenAIMeters``, not with the hooks.
"""

from __future__ import annotations

from typing import Any, Final

from . import attributes as attr
from .record import CallRecord

TOKEN_USAGE: Final = "gen_ai.client.token.usage"
OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TTFC_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
METER_NAME: Final = "watcher.instrument"


class GenAIMeters:
    """The conventions' client histograms on one meter provider."""

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics

        from .. import __version__

        meter = metrics.get_meter(METER_NAME, __version__, meter_provider=meter_provider)
        self.tokens = meter.create_histogram(
            TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.ttfc = meter.create_histogram(
            TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=list(TTFC_BUCKETS),
        )

    def record(self, rec: CallRecord, server: tuple[str, int | None] | None = None) -> None:
        """Record one finished call."""
        base: dict[str, Any] = {
            attr.GEN_AI_OPERATION_NAME: rec.operation,
            attr.GEN_AI_PROVIDER_NAME: rec.provider,
            attr.GEN_AI_REQUEST_MODEL: rec.model,
        }
        if rec.response_model:
            base[attr.GEN_AI_RESPONSE_MODEL] = rec.response_model
        if server is not None:
            base[attr.SERVER_ADDRESS] = server[0]
            if server[1] is not None:
                base[attr.SERVER_PORT] = server[1]
        timing = dict(base)
        if rec.outcome == "error":
            timing[attr.ERROR_TYPE] = rec.error_type or "_OTHER"
        if rec.duration_s is not None:
            self.duration.record(rec.duration_s, timing)
        if rec.ttft_s is not None:
            self.ttfc.record(rec.ttft_s, timing)
        if rec.outcome != "error" or rec.input_tokens or rec.output_tokens:
            self.tokens.record(rec.input_tokens, {**base, attr.GEN_AI_TOKEN_TYPE: "input"})
            self.tokens.record(rec.output_tokens, {**base, attr.GEN_AI_TOKEN_TYPE: "output"})
