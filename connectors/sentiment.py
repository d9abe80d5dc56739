"""Offline sentiment of a support message, Chinese or English, in [-1, 1].

English is scored with VADER (the ``vaderSentiment`` package ships its lexicon: the
``compound`` score, already in [-1, 1]); Chinese with SnowNLP's naive Bayes model (the
``snownlp`` package ships it: a probability p of positive, mapped to 2p - 1). Nothing is
downloaded at run time. A message mixing both languages is scored by both, weighted by
how much of it each language holds (Chinese characters against English words).

Loading SnowNLP's model takes about two seconds, so it happens once, at the first
Chinese message or at :meth:`LexiconSentiment.warm_up`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Language = Literal["zh", "en", "mixed", "none"]
MAX_SCORED_CHARACTERS = 2000
"""Longer messages are scored on their first characters (bounded time per message)."""

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_ONE_LANGUAGE = 0.9
"""When one language holds this share of the message, only its model scores it."""


@dataclass(frozen=True, slots=True)
class Sentiment:
    value: float
    """-1 (negative) .. 1 (positive); 0 neutral or no text."""
    language: Language


class SentimentScorer(Protocol):
    def score(self, text: str) -> Sentiment: ...


class LexiconSentiment:
    """VADER for English and SnowNLP for Chinese; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vader: Any = None
        self._snownlp: Any = None

    def warm_up(self) -> None:
        self._english()
        self._chinese()

    def _english(self) -> Any:
        with self._lock:
            if self._vader is None:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                self._vader = SentimentIntensityAnalyzer()
            return self._vader

    def _chinese(self) -> Any:
        with self._lock:
            if self._snownlp is None:
                from snownlp import SnowNLP

                _ = SnowNLP("好").sentiments  # loads the model now, not at the next message
                self._snownlp = SnowNLP
            return self._snownlp

    def score(self, text: str) -> Sentiment:
        text = text[:MAX_SCORED_CHARACTERS]
        chinese = len(_CJK.findall(text))
        english = len(_WORD.findall(text))
        if chinese + english == 0:
            return Sentiment(0.0, "none")
        share = chinese / (chinese + english)
        zh = en = 0.0
        if share > 1 - _ONE_LANGUAGE:
            zh = 2 * float(self._chinese()(text).sentiments) - 1
        if share < _ONE_LANGUAGE:
            en = float(self._english().polarity_scores(text)["compound"])
        if share >= _ONE_LANGUAGE:
            return Sentiment(_bounded(zh), "zh")
        if share <= 1 - _ONE_LANGUAGE:
            return Sentiment(_bounded(en), "en")
        return Sentiment(_bounded(share * zh + (1 - share) * en), "mixed")


def _bounded(value: float) -> float:
    return round(max(-1.0, min(1.0, value)), 4)
