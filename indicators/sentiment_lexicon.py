"""A small, explicit word-list sentiment scorer: the opt-in fallback when no local model exists.

It is used only when an artifact or setting says ``backend: lexicon``; the model backend never
falls back to it. Scoring rule (VADER-like, but our own short financial word list):
tokens are lower-cased ``[a-z]+('[a-z]+)?`` words; each listed word adds its valence (+1/+2 or
-1/-2); a negator (``not``, ``no``, ``never``, ``without``, ``n't``...) flips the sign of listed
words among the next three tokens; the sum ``x`` is squashed to ``x / sqrt(x**2 + 15)`` in
(-1, 1), so one mild word gives about ±0.25 and four strong ones about ±0.9. No words: 0.0.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

from indicators.sentiment_errors import SentimentConfigError

__all__ = ["LEXICON", "NEGATORS", "LexiconScorer", "lexicon_score"]

_POSITIVE_STRONG = (
    "beat beats bullish breakout record records soar soared soaring soars surge surged surges "
    "surging skyrocket skyrocketed upgrade upgraded upgrades outperform outperformed rally rallied "
    "rallies boom booming"
)
_POSITIVE = (
    "gain gains gained rise rises rising rose up higher high strong stronger strength growth grow "
    "grows growing profit profits profitable positive optimistic optimism recover recovery "
    "recovered rebound rebounded approve approved approval adoption partnership launch launched "
    "buy buying support supported good great win wins winning expand expansion inflow inflows "
    "accumulate accumulation exceed exceeded exceeds upside"
)
_NEGATIVE_STRONG = (
    "bearish crash crashed crashes plunge plunged plunges collapse collapsed collapses hack hacked "
    "fraud bankrupt bankruptcy default defaulted downgrade downgraded downgrades liquidation "
    "liquidations selloff scam exploit exploited"
)
_NEGATIVE = (
    "loss losses lose losing lost fall falls fell falling drop drops dropped down lower low weak "
    "weaker weakness decline declined declines declining miss misses missed negative pessimistic "
    "fear fears concern concerns risk risks lawsuit sue sued probe investigation ban banned "
    "outflow outflows sell selling dump dumped delay delayed halt halted bad worse worst slump "
    "slumped warning warns warn recession inflation downside reject rejected"
)

LEXICON: Final[Mapping[str, float]] = MappingProxyType(
    {
        **{w: 1.0 for w in _POSITIVE.split()},
        **{w: 2.0 for w in _POSITIVE_STRONG.split()},
        **{w: -1.0 for w in _NEGATIVE.split()},
        **{w: -2.0 for w in _NEGATIVE_STRONG.split()},
    }
)
"""Word -> valence. Written for crypto/equity headlines; extend by passing your own mapping."""

NEGATORS: Final[frozenset[str]] = frozenset(
    {"not", "no", "never", "without", "n't", "nor", "hardly", "neither", "cannot"}
)
"""Words that flip the sign of the listed words among the next :data:`NEGATION_WINDOW` tokens."""

NEGATION_WINDOW: Final = 3
SQUASH_ALPHA: Final = 15.0  # VADER's normalisation constant: x / sqrt(x^2 + alpha)

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok.endswith("n't"):  # "isn't" -> "is", "n't": the negator becomes its own token
            out.extend((tok[:-3], "n't"))
        else:
            out.append(tok)
    return out


def lexicon_score(
    text: str, lexicon: Mapping[str, float] = LEXICON, negators: frozenset[str] = NEGATORS
) -> float:
    """Signed score of ``text`` in (-1, 1) by the rule in the module docstring."""
    total = 0.0
    negate_left = 0
    for tok in _tokens(text):
        if tok in negators:
            negate_left = NEGATION_WINDOW
            continue
        valence = lexicon.get(tok)
        if valence is not None:
            total += -valence if negate_left > 0 else valence
        if negate_left > 0:
            negate_left -= 1
    if total == 0.0:
        return 0.0
    return total / math.sqrt(total * total + SQUASH_ALPHA)


class LexiconScorer:
    """Scorer protocol over :func:`lexicon_score`; cheap enough to need no cache."""

    backend = "lexicon"

    def __init__(self, lexicon: Mapping[str, float] | None = None) -> None:
        table = dict(LEXICON if lexicon is None else lexicon)
        for word, valence in sorted(table.items()):
            if not isinstance(word, str) or not isinstance(valence, int | float):
                raise SentimentConfigError(
                    f"lexicon entry {word!r}: {valence!r} must map a str to a number"
                )
            if not math.isfinite(valence) or word != word.lower():
                raise SentimentConfigError(
                    f"lexicon entry {word!r}: {valence!r} needs a lower-case word and a finite "
                    "valence (texts are lower-cased before lookup)"
                )
        self.lexicon: Mapping[str, float] = MappingProxyType(table)
        payload = json.dumps(
            {
                "lexicon": sorted(self.lexicon.items()),
                "negators": sorted(NEGATORS),
                "window": NEGATION_WINDOW,
                "alpha": SQUASH_ALPHA,
            }
        )
        self.fingerprint = hashlib.sha256(payload.encode()).hexdigest()
        self.texts_scored = 0

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score per text, in order."""
        self.texts_scored += len(texts)
        return [lexicon_score(t, self.lexicon) for t in texts]
