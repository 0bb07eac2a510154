"""One grammar names a pruning method; it is parsed here and nowhere else.

    method    := 'imp' | scorers ['@' schedule] ['~' init] ['!' ablation]
    scorers   := scorer ['>' scorer]          A>B: stacked scoring (thesis algorithm 1)
    scorer    := a registered scorer or alias (mag, snip, grasp, grasp_abs, synflow, random)
                 | 'learned:' MODEL_DIR       a fitted scorer (``metaprune fit``)
    schedule  := uss | ums | iss | ims        default: ums for synflow (its paper), uss otherwise;
                                              a stack takes the default of its second scorer
    init      := standard | bimodal | scorer  a scorer here means SaW: its scores on θ0 as weights
    ablation  := shuffle | reinit | invert    sanity checks (Frankle et al. 2021, Su et al. 2020)

Examples: ``snip``, ``synflow@ums``, ``mag>synflow``, ``mag>synflow~snip``, ``imp`` (= magnitude@iss),
``synflow@ims``, ``snip~bimodal``, ``snip!shuffle``, ``learned:models/mlp-round-all-1a2b3c4d``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from metaprune.errors import MetapruneError

SCHEDULE_NAMES = ("uss", "ums", "iss", "ims")
ABLATIONS = ("shuffle", "reinit", "invert")
BASE_INITS = ("standard", "bimodal")
ALIASES = {"imp": "magnitude@iss"}
LEARNED = "learned:"

GRAMMAR_HELP = (
    "METHOD = [A>]B[@schedule][~init][!ablation]; A>B stacks scorer B on scorer A's scores; "
    "schedule: uss, ums, iss, ims (default ums for synflow, uss otherwise); init: standard, bimodal, or a "
    "scorer for SaW (scores as weights); ablation: shuffle, reinit, invert; 'imp' = magnitude@iss; "
    "learned:MODEL_DIR is a fitted scorer. Examples: snip, synflow@ums, mag>synflow, mag>synflow~snip, imp"
)
SHORT_HELP = "grammar [A>]B[@schedule][~init][!ablation], e.g. snip, synflow@ums, mag>synflow~snip, imp"


@dataclass(frozen=True)
class Method:
    scorers: tuple[str, ...]  # one scorer, or (A, B) for a stack
    schedule: str
    init: str = "standard"  # standard | bimodal | a scorer name (SaW)
    ablation: str | None = None

    @property
    def stacked(self) -> bool:
        return len(self.scorers) == 2

    @property
    def iterative(self) -> bool:
        return self.schedule in ("iss", "ims")

    @property
    def multi_shot(self) -> bool:
        return self.schedule in ("ums", "ims")

    @property
    def saw(self) -> bool:
        return self.init not in BASE_INITS

    @property
    def learned_models(self) -> tuple[str, ...]:
        names = (*self.scorers, self.init)
        return tuple(n[len(LEARNED) :] for n in names if n.startswith(LEARNED))

    def canonical(self) -> str:
        text = ">".join(self.scorers) + "@" + self.schedule
        if self.init != "standard":
            text += "~" + self.init
        if self.ablation:
            text += "!" + self.ablation
        return text

    def __str__(self) -> str:
        return self.canonical()


def _fail(text: str, pos: int, what: str) -> MetapruneError:
    char = repr(text[pos]) if pos < len(text) else "end of text"
    return MetapruneError(f"bad method {text!r} at character {pos + 1} ({char}): {what}; {SHORT_HELP}")


def _scorer_names() -> list[str]:
    from metaprune.pruning.scorers import SCORERS

    return SCORERS.names()


def _canonical_scorer(token: str, text: str, pos: int) -> str:
    from metaprune.pruning.scorers import SCORERS

    if token.startswith(LEARNED):
        if len(token) == len(LEARNED):
            raise _fail(text, pos + len(token), "expected a model directory after 'learned:'")
        return token
    if token in SCORERS:
        return SCORERS.canonical(token)
    raise _fail(text, pos, f"unknown scorer {token!r}, accepted: {', '.join(_scorer_names())} or learned:DIR")


_TOKEN = re.compile(r"learned:[^@~!>]*|[A-Za-z_][A-Za-z0-9_]*")


def parse_method(text: str) -> Method:
    """Parse a method string; errors point at the offending character."""
    text = ALIASES.get(text.strip(), text.strip())
    if text.startswith("imp") and text[3:4] in ("~", "!"):
        text = "magnitude@iss" + text[3:]
    if not text:
        raise MetapruneError(f"empty method; {SHORT_HELP}")
    pos = 0
    scorers: list[str] = []
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            raise _fail(text, pos, "expected a scorer name")
        scorers.append(_canonical_scorer(m.group(0), text, pos))
        pos = m.end()
        if pos < len(text) and text[pos] == ">":
            if len(scorers) == 2:
                raise _fail(text, pos, "a stack has at most two scorers (A>B)")
            pos += 1
            continue
        break
    schedule = None
    init = "standard"
    ablation = None
    seen: set[str] = set()
    while pos < len(text):
        sep = text[pos]
        if sep not in "@~!" or sep in seen:
            what = f"{sep!r} given twice" if sep in seen else "expected '@schedule', '~init', '!ablation' or the end"
            raise _fail(text, pos, what)
        order = "@~!"
        if any(order.index(s) > order.index(sep) for s in seen):
            raise _fail(text, pos, "parts must come in the order @schedule ~init !ablation")
        seen.add(sep)
        m = _TOKEN.match(text, pos + 1)
        if not m:
            raise _fail(text, pos + 1, f"expected a name after {sep!r}")
        word = m.group(0)
        if sep == "@":
            if word not in SCHEDULE_NAMES:
                raise _fail(text, pos + 1, f"unknown schedule {word!r}, accepted: {', '.join(SCHEDULE_NAMES)}")
            schedule = word
        elif sep == "~":
            if word in ("kaiming",):
                word = "standard"
            if word not in BASE_INITS and not word.startswith(LEARNED) and word not in _scorer_names() + ["mag"]:
                raise _fail(text, pos + 1, f"unknown init {word!r}, accepted: standard, bimodal, or a scorer (SaW)")
            init = word if word in BASE_INITS else _canonical_scorer(word, text, pos + 1)
        else:
            if word not in ABLATIONS:
                raise _fail(text, pos + 1, f"unknown ablation {word!r}, accepted: {', '.join(ABLATIONS)}")
            ablation = word
        pos = m.end()
    if schedule is None:
        schedule = "ums" if scorers[-1] == "synflow" else "uss"
    return Method(tuple(scorers), schedule, init, ablation)
