"""Online evaluation: the sampler's always-rules, background scoring, heuristics, negative feedback."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from watcher import instrument
from watcher.instrument import StoreWriter, llm_call, record_feedback
from watcher.instrument.evaluation import EvalInput, OnlineEvaluator, Sampler, groundedness, refusal
from watcher.store.tables import Score

ReadScores = Callable[[], list[Score]]
CONTEXT = ["The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair."]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The Eiffel Tower is in Paris. It was completed in 1889.", 1.0),
        ("The Eiffel Tower is in Paris. It is painted bright green by aliens every Tuesday.", 0.5),
        ("Bananas grow on trees in tropical climates.", 0.0),
    ],
)
def test_groundedness(answer: str, expected: float) -> None:
    assert groundedness(EvalInput("t", "q", answer, tuple(CONTEXT))) == expected


def test_heuristics_not_applicable_without_inputs() -> None:
    assert groundedness(EvalInput("t", "q", "answer")) is None
    assert refusal(EvalInput("t", "q", None)) is None
    assert refusal(EvalInput("t", "q", "I'm sorry, but I can't help with that.")) == 1.0


def _rec_like(**over: object) -> object:
    base = {"flagged": False, "outcome": "ok", "confidence": None}
    return type("R", (), {**base, **over})()


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"flagged": True}, "flagged"),
        ({"outcome": "refused"}, "refused"),
        ({"confidence": 0.2}, "low_confidence"),
        ({"confidence": 0.9}, None),
        ({"outcome": "error"}, None),
    ],
)
def test_sampler_always_rules(over: dict[str, object], reason: str | None) -> None:
    assert Sampler(rate=0.0).reason(_rec_like(**over)) == reason  # type: ignore[arg-type]


def test_sampler_rate() -> None:
    s = Sampler(rate=0.25, rng=random.Random(1))
    picked = sum(s.reason(_rec_like()) == "sampled" for _ in range(4000))  # type: ignore[arg-type]
    assert 850 < picked < 1150
    with pytest.raises(ValueError):
        Sampler(rate=1.5)


@pytest.fixture
def evaluator(writer: StoreWriter, registry: CollectorRegistry) -> Iterator[OnlineEvaluator]:
    def judge(inp: EvalInput) -> float:
        if "boom" in (inp.prompt or ""):
            raise RuntimeError("judge down")
        return 0.9

    ev = OnlineEvaluator({"relevance": judge}, sampler=Sampler(rate=0.0)).start()
    instrument.configure(writer=writer, registry=registry, observer=ev)
    yield ev
    ev.close()
    instrument.reset()


def test_selected_calls_are_scored_in_the_background(
    evaluator: OnlineEvaluator, scores: ReadScores, registry: CollectorRegistry
) -> None:
    with llm_call(provider="openai", model="gpt-4o", feature="rag") as flagged:
        flagged.prompt, flagged.response, flagged.context = "Where?", "The Eiffel Tower is in Paris.", CONTEXT
        flagged.flagged = True
    with llm_call(provider="openai", model="gpt-4o") as skipped:
        skipped.prompt, skipped.response = "hi", "hello"
    with llm_call(provider="openai", model="gpt-4o") as boom:
        boom.prompt, boom.response, boom.refused = "boom", "No.", True
    assert evaluator.flush(10)
    rows = scores()
    by = {(r.trace_id, r.name): r for r in rows}
    assert by[(flagged.trace_id, "groundedness")].value == 1.0
    assert by[(flagged.trace_id, "groundedness")].source == "heuristic"
    assert by[(flagged.trace_id, "relevance")].source == "judge"
    assert (
        by[(flagged.trace_id, "relevance")].label == "flagged"
        and by[(flagged.trace_id, "relevance")].feature == "rag"
    )
    assert by[(boom.trace_id, "refusal")].value == 1.0
    assert (boom.trace_id, "relevance") not in by  # the judge failed: counted, not raised
    failed = by[(boom.trace_id, "eval.error")]  # … and stored, with the error's type only
    assert (failed.value, failed.label, failed.evaluator, failed.source) == (
        1.0,
        "RuntimeError",
        "relevance",
        "judge",
    )
    assert "judge down" not in (failed.comment or "")
    assert not any(r.trace_id == skipped.trace_id for r in rows)
    st = evaluator.stats()
    assert (st.offered, st.selected, st.judge_errors) == (3, 2, 1)
    assert (
        registry.get_sample_value(
            "llm_eval_score_count", {"name": "relevance", "source": "judge", "tenant": "", "feature": "rag"}
        )
        == 1
    )

    # A negative rating later selects the skipped call.
    assert record_feedback(skipped.trace_id, False)
    assert evaluator.flush(10)
    later = [r for r in scores() if r.trace_id == skipped.trace_id and r.source == "judge"]
    assert [r.label for r in later] == ["negative_feedback"]


def test_overload_drops_and_counts(writer: StoreWriter, registry: CollectorRegistry) -> None:
    def slow(inp: EvalInput) -> float:
        time.sleep(0.05)
        return 1.0

    ev = OnlineEvaluator({"slow": slow}, sampler=Sampler(rate=1.0), heuristics=(), max_queue=2).start()
    instrument.configure(writer=writer, registry=registry, observer=ev)
    try:
        start = time.perf_counter()
        for _ in range(20):
            with llm_call(provider="p", model="m") as rec:
                rec.response = "x"
        assert time.perf_counter() - start < 0.5  # the caller never waits for judges
        assert instrument.flush(timeout=10)  # the calls are offered in the background
        assert ev.stats().dropped > 0
    finally:
        ev.close()
        instrument.reset()
