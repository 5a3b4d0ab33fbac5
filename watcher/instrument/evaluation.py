"""Online evaluation: choose which calls to score and score them in the background.

This module owns the ``Sampler`` (always: flagged, refused, errored, low-confidence calls and
calls a user rated negatively; the rest at a configured rate), the ``OnlineEvaluator`` (a bounded
queue and a worker thread running the user's judges and the built-in reference-free heuristics,
each result written with ``record_score`` after the user already has the response) and the
heuristics themselves: ``groundedness`` (the share of answer sentences supported by the retrieved
context) and ``refusal`` (the phrase classifier). The application's thread only pays for a queue
put; overload drops and counts, a failing judge is counted and stored as an ``eval.error`` score
(``record_eval_error``), nothing raises. It does not own
writing scores (``scores``) nor the LLM-as-judge prompts (the user's judges).

Use: ``evaluator = OnlineEvaluator({"relevance": my_judge}, sampler=Sampler(rate=0.05)).start()``
then ``configure(..., observer=evaluator)``; ``evaluator.close()`` at shutdown.
"""

from __future__ import annotations

import logging
import queue
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from .record import CallRecord
from .refusal import RefusalClassifier
from .scores import record_eval_error, record_score

log = logging.getLogger(__name__)

_WORD: Final = re.compile(r"[a-z0-9]+")
_SENTENCE: Final = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP_WORDS: Final = (
    "the a an and or but if of to in on at by for with from as is are was were be been being it its this "
    "that these those there here you your we our they their he she his her i me my not no yes do does did "
    "can could would should will shall may might must have has had than then so such also which who whom "
    "what when where why how all any each into about over under more most other some only own same very"
)
_STOP: Final = frozenset(_STOP_WORDS.split(" "))


@dataclass(frozen=True, slots=True)
class EvalInput:
    """What a judge sees of one call."""

    trace_id: str
    prompt: str | None
    response: str | None
    context: tuple[str, ...] = ()
    model: str = ""
    tenant: str = ""
    feature: str = ""
    outcome: str = "ok"
    reason: str = "sampled"
    """Why the call was selected: flagged, refused, error, low_confidence, negative_feedback, sampled."""


Judge = Callable[[EvalInput], float | None]
"""A user's scorer: a value (conventionally in [0, 1]) or None for "not applicable"."""


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP}


def groundedness(inp: EvalInput, *, support: float = 0.6) -> float | None:
    """Return the share of answer sentences whose content words are mostly in the context.

    A sentence is supported when at least ``support`` of its content words occur in the
    retrieved context. None without a context or an answer (not applicable).
    """
    if not inp.context or not inp.response:
        return None
    known = _content_words(" ".join(inp.context))
    sentences = [s for s in _SENTENCE.split(inp.response) if _content_words(s)]
    if not sentences:
        return None
    supported = 0
    for sentence in sentences:
        words = _content_words(sentence)
        if len(words & known) >= support * len(words):
            supported += 1
    return supported / len(sentences)


_refusal = RefusalClassifier()


def refusal(inp: EvalInput) -> float | None:
    """Return 1.0 when the answer is a refusal by the phrase classifier, 0.0 otherwise."""
    if inp.response is None:
        return None
    return 1.0 if (inp.outcome == "refused" or _refusal(inp.response)) else 0.0


HEURISTICS: Final[Mapping[str, Judge]] = {"groundedness": groundedness, "refusal": refusal}


@dataclass
class Sampler:
    """Decide whether a finished call is scored, and why.

    Always: calls the application flagged (``rec.flagged``), refusals, errors, and calls whose
    ``rec.confidence`` is below ``low_confidence``; the rest with probability ``rate``.
    """

    rate: float = 0.1
    low_confidence: float = 0.5
    score_errors: bool = False
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"sampling rate must be within [0, 1], got {self.rate}")

    def reason(self, rec: CallRecord) -> str | None:
        """Return why ``rec`` is selected, or None when it is not."""
        if rec.flagged:
            return "flagged"
        if rec.outcome == "refused":
            return "refused"
        if rec.outcome == "error":
            return "error" if self.score_errors else None
        if rec.confidence is not None and rec.confidence < self.low_confidence:
            return "low_confidence"
        return "sampled" if self.rng.random() < self.rate else None


@dataclass(frozen=True, slots=True)
class EvaluatorStats:
    """Counters of an evaluator."""

    offered: int
    selected: int
    dropped: int
    scored: int
    judge_errors: int


_STOP_ITEM: Final = object()


class OnlineEvaluator:
    """Score selected calls on a background thread with judges and heuristics (a ``CallObserver``)."""

    def __init__(
        self,
        judges: Mapping[str, Judge] | None = None,
        *,
        sampler: Sampler | None = None,
        heuristics: Sequence[str] = ("groundedness", "refusal"),
        max_queue: int = 1000,
        remember: int = 2000,
    ) -> None:
        unknown = sorted(set(heuristics) - set(HEURISTICS))
        if unknown:
            raise ValueError(f"unknown heuristic(s) {unknown}; known: {sorted(HEURISTICS)}")
        self.scorers: list[tuple[str, str, Judge]] = [(n, "heuristic", HEURISTICS[n]) for n in heuristics]
        self.scorers += [(name, "judge", fn) for name, fn in (judges or {}).items()]
        self.sampler = sampler or Sampler()
        self._queue: queue.Queue[EvalInput | object] = queue.Queue(maxsize=max_queue)
        self._recent: OrderedDict[str, EvalInput] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        self._counts = {"offered": 0, "selected": 0, "dropped": 0, "scored": 0, "judge_errors": 0}
        self._done: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="watcher-evaluator", daemon=True)
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def start(self) -> OnlineEvaluator:
        """Start the worker thread and return self."""
        self._thread.start()
        return self

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def offer(self, rec: CallRecord) -> None:
        """Take note of one finished call; queue it for scoring when the sampler selects it."""
        inp = EvalInput(
            rec.trace_id,
            rec.prompt,
            rec.response,
            tuple(rec.context or ()),
            rec.model,
            rec.tenant,
            rec.feature,
            rec.outcome,
        )
        reason = self.sampler.reason(rec)
        with self._lock:
            self._counts["offered"] += 1
            self._recent[rec.trace_id] = inp
            while len(self._recent) > self._remember:
                self._recent.popitem(last=False)
        if reason is not None:
            self._enqueue(replace(inp, reason=reason))

    def on_feedback(self, trace_id: str) -> None:
        """Score a remembered call a user rated negatively (once per trace)."""
        with self._lock:
            inp = self._recent.get(trace_id)
        if inp is not None:
            self._enqueue(replace(inp, reason="negative_feedback"))

    def _enqueue(self, inp: EvalInput) -> None:
        with self._lock:
            if inp.trace_id in self._done:
                return
            self._done.add(inp.trace_id)
            if len(self._done) > 4 * self._remember:
                self._done.clear()  # bounded memory; a rare re-score is harmless
            self._pending += 1
        try:
            self._queue.put_nowait(inp)
            self._count("selected")
        except queue.Full:
            with self._lock:
                self._pending -= 1
                self._counts["dropped"] += 1
                self._idle.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP_ITEM:
                return
            assert isinstance(item, EvalInput)
            try:
                self._score(item)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def _score(self, inp: EvalInput) -> None:
        for name, source, fn in self.scorers:
            try:
                value = fn(inp)
            except Exception as exc:
                self._count("judge_errors")
                log.warning(
                    "online evaluation: %s failed on trace %s: %s: %s",
                    name,
                    inp.trace_id,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                # stored, so the judge error rate is a rule (the type only: a message may quote the prompt)
                record_eval_error(
                    inp.trace_id,
                    name,
                    exc,
                    source=source,
                    tenant=inp.tenant,
                    feature=inp.feature,
                    model=inp.model,
                )
                continue
            if value is None:
                continue
            if record_score(
                inp.trace_id,
                name,
                float(value),
                source=source,
                evaluator=name,
                label=inp.reason,
                tenant=inp.tenant,
                feature=inp.feature,
                model=inp.model,
            ):
                self._count("scored")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued call is scored; return False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Score what is queued, then stop the worker."""
        if self._thread.is_alive():
            self.flush(timeout)
            self._queue.put(_STOP_ITEM)
            self._thread.join(timeout)

    def stats(self) -> EvaluatorStats:
        """Return a snapshot of the counters."""
        with self._lock:
            return EvaluatorStats(**self._counts)
