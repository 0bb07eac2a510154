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
IMP = "imp"  # = magnitude@iss (iterative magnitude pruning)
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
    accepted = ", ".join(f"{e.name} (alias {', '.join(e.aliases)})" if e.aliases else e.name for e in SCORERS)
    raise _fail(text, pos, f"unknown scorer {token!r}, accepted: {accepted}, imp (= magnitude@iss) or learned:DIR")


_TOKEN = re.compile(r"learned:[^@~!>]*|[A-Za-z_][A-Za-z0-9_]*")


def parse_method(text: str) -> Method:
    """Parse a method string; errors point at the offending character (1-based, in the stripped text)."""
    text = text.strip()
    if not text:
        raise MetapruneError(f"empty method; {SHORT_HELP}")
    pos = 0
    scorers: list[str] = []
    schedule = None
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            raise _fail(text, pos, "expected a scorer name")
        token = m.group(0)
        if token == IMP:
            # 'imp' is magnitude@iss: a whole scorer + schedule, so it cannot be stacked
            if scorers or text[m.end() : m.end() + 1] == ">":
                raise _fail(text, pos, "'imp' (= magnitude@iss) cannot be part of a stack; write e.g. mag>snip@iss")
            scorers.append("magnitude")
            schedule = "iss"
        else:
            scorers.append(_canonical_scorer(token, text, pos))
        pos = m.end()
        if pos < len(text) and text[pos] == ">":
            if len(scorers) == 2:
                raise _fail(text, pos, "a stack has at most two scorers (A>B)")
            pos += 1
            continue
        break
    imp = schedule is not None
    init = "standard"
    ablation = None
    seen: set[str] = set()
    order = "@~!"
    while pos < len(text):
        sep = text[pos]
        if sep not in order:
            raise _fail(text, pos, "expected '@schedule', '~init', '!ablation' or the end")
        if sep in seen:
            raise _fail(text, pos, f"{sep!r} given twice")
        if any(order.index(s) > order.index(sep) for s in seen):
            raise _fail(text, pos, "parts must come in the order @schedule ~init !ablation")
        if sep == "@" and imp:
            raise _fail(text, pos, "'imp' already fixes the schedule (magnitude@iss); write magnitude@SCHEDULE")
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
            init = _init_name(word, text, pos + 1)
        else:
            if word not in ABLATIONS:
                raise _fail(text, pos + 1, f"unknown ablation {word!r}, accepted: {', '.join(ABLATIONS)}")
            ablation = word
        pos = m.end()
    if schedule is None:
        schedule = "ums" if scorers[-1] == "synflow" else "uss"
    return Method(tuple(scorers), schedule, init, ablation)


def _init_name(word: str, text: str, pos: int) -> str:
    """Canonical init: standard (alias kaiming), bimodal, or a scorer / learned:DIR for SaW."""
    from metaprune.pruning.scorers import SCORERS

    if word == "kaiming":
        return "standard"
    if word in BASE_INITS:
        return word
    if word.startswith(LEARNED) or word in SCORERS:
        return _canonical_scorer(word, text, pos)
    raise _fail(
        text,
        pos,
        f"unknown init {word!r}, accepted: standard (alias kaiming), bimodal, or a scorer for SaW "
        f"({', '.join(_scorer_names())}, learned:DIR)",
    )
