"""One grammar names a pruning method; it is parsed here and nowhere else.

    method    := ('imp' | 'rigl' | scorers ['@' schedule]) ['+w' LENGTH] ['#' budget] ['~' init] ['!' ablation]
    scorers   := scorer ['>' scorer]          A>B: stacked scoring (thesis algorithm 1)
    scorer    := a registered scorer or alias (mag, snip, grasp, grasp_abs, synflow, random,
                 delta, movement, mag_increase, abs_grad, prospr, ntksap, force, phew, gem)
                 | 'gem' E                    GEM-MINER with E epochs of mask learning (gem20; gem: its default)
                 | 'learned:' MODEL_DIR       a fitted scorer (``metaprune fit``)
    schedule  := (uss | ums | iss | ims | gss | gms)[N]   default: the scorer's own (its paper's: ums for synflow,
                 | rigl                       rigl: the scorer's single-shot mask at θ0, then dynamic sparse
                                              training (RigL: the mask changes while the ticket trains);
                                              'rigl' alone = random@rigl#erk, RigL as its paper runs it
                                              ums20 for ntksap, ums60 for force), uss otherwise;
                                              N: rounds of a multi-shot schedule (ums20: 20 rounds; default:
                                              the schedule config's, 100);
                                              a stack takes the default of its second scorer;
                                              gss, gms: gradual, iss/ims without rewinding (each level
                                              trains on from where the last ended; Zhu and Gupta 2017)
    LENGTH    := EPOCHS | STEPS 's'           the training that decides the mask: EPOCHS (a positive number;
                                              fractions are whole SGD steps) or STEPS SGD steps (+w100s).
                                              Upfront (uss, ums): a dense warm-up from θ0, scored at θ_E;
                                              iterative (iss, ims, gss, gms): the budget all levels share (imp+w3 =
                                              IMP whose levels train 3/levels epochs each, no early
                                              stopping); under gss/gms a scorer that reads a
                                              warm-up reads the levels' own trajectory
                                              (movement@gss+w3). The ticket still trains from θ0
    budget    := global | layer | learned | erk | from:M
                                              how the kept count is split over layers: one global top-k
                                              (default), the same fraction per layer, the per-layer counts
                                              the learned scorer's budget model predicts (learned:DIR only),
                                              RigL's Erdős–Rényi-kernel split (erk), or the per-layer counts
                                              of method M (no budget, init or ablation of its own) on the
                                              same θ0
    init      := standard | bimodal | scorer  a scorer here means SaW: its scores on θ0 as weights
    ablation  := shuffle | reinit | invert    sanity checks (Frankle et al. 2021, Su et al. 2020)
                 | sibling                    the same method from the same θ0 with an independent data
                                              order and pruning batch (``seeds.sibling_seed``): the noise
                                              ceiling of a target (Movva, Frankle and Carbin 2021)

Besides methods, this module owns every other spelling of the grammar: the suffix a fitted model records as
its intended use (``IntendedUse``: ``@ums10#learned``) and merges into a bare learned method
(``Method.merge``), an evaluation's unpruned units (``DenseUnit``: ``dense``, ``dense~snip``), the short
labels tables and plots print (``Method.label``), and the file-name slug of a unit (``slug``).

Examples: ``snip``, ``synflow@ums``, ``mag>synflow``, ``mag>synflow~snip``, ``imp`` (= magnitude@iss),
``synflow@ims``, ``snip~bimodal``, ``snip!shuffle``, ``learned:models/mlp-round-all-1a2b3c4d``,
``delta+w3``, ``magnitude+w3``, ``snip#from:synflow@ums``, ``synflow@ums#layer``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from metaprune.errors import MetapruneError

SCHEDULE_NAMES = ("uss", "ums", "iss", "ims", "gss", "gms", "rigl")
ITERATIVE = ("iss", "ims", "gss", "gms")  # train between levels
MULTI_SHOT = ("ums", "ims", "gms")  # several prune rounds per step
REWINDING = ("iss", "ims")  # each level trains from θ0 again; gss/gms train on (gradual)
ABLATIONS = ("shuffle", "reinit", "invert")
SIBLING = "sibling"  # not an ablation: the same method on other random draws, spelled in the '!' slot
BASE_INITS = ("standard", "bimodal")
BUDGETS = ("global", "layer", "learned", "erk")  # plus from:METHOD
FROM = "from:"
IMP = "imp"  # = magnitude@iss (iterative magnitude pruning)
RIGL = "rigl"  # = random@rigl#erk (RigL: a random ERK mask, then dynamic sparse training)
DYNAMIC = "rigl"  # the schedule whose mask changes while the ticket trains
LEARNED = "learned:"  # the prefix of a fitted scorer's name: learned:MODEL_DIR
DENSE = "dense"  # an evaluation's unpruned unit: dense[~init]

GRAMMAR_HELP = (
    "METHOD = [A>]B[@schedule][+wE][#budget][~init][!ablation]; A>B stacks scorer B on scorer A's scores; "
    "schedule: uss, ums, iss, ims, or gss/gms (gradual: iss/ims without rewinding) (default: the scorer's "
    "paper's, e.g. ums for synflow; uss otherwise), umsN/imsN/gmsN for N rounds, rigl (dynamic sparse "
    "training from the scorer's mask; 'rigl' = random@rigl#erk); "
    "+wE: score after E dense warm-up epochs (+wNs: N SGD steps; the ticket still trains from θ0; iterative: "
    "the training budget its levels share, imp+w3, magnitude@gss+w3); budget: "
    "global, layer, learned (a learned scorer's own split), erk (RigL's Erdős–Rényi-kernel split) or "
    "from:METHOD (that method's per-layer counts); init: standard, bimodal, "
    "or a scorer for SaW (scores as weights); ablation: shuffle, reinit, invert, or sibling (the same method with "
    "an independent data order and pruning batch); 'imp' = magnitude@iss; "
    "gemE is GEM-MINER with E epochs of mask learning; learned:MODEL_DIR is a fitted scorer. "
    "Examples: snip, synflow@ums, mag>synflow, mag>synflow~snip, imp, delta+w3, snip#from:synflow@ums"
)
SHORT_HELP = (
    "grammar [A>]B[@schedule][+wE][#budget][~init][!ablation], e.g. snip, synflow@ums, mag>synflow~snip, imp, "
    "delta+w3, snip#from:synflow@ums"
)


@dataclass(frozen=True)
class Method:
    scorers: tuple[str, ...]  # one scorer, or (A, B) for a stack
    schedule: str
    init: str = "standard"  # standard | bimodal | a scorer name (SaW)
    ablation: str | None = None
    # upfront: dense epochs from θ0 before scoring (None: score θ0 itself); iterative: the epochs all levels
    # share (None: every level trains the training config's epochs with early stopping)
    warmup: float | None = None
    budget: str | None = None  # global | layer | learned | erk | from:METHOD (None: the schedule config's scope)
    rounds: int | None = None  # multi-shot rounds (``ums20``); None: the schedule config's
    warmup_in_steps: bool = False  # True: ``warmup`` counts SGD steps (``+w100s``), not epochs
    # False only for a schedule the text left out (the scorer's default): a learned scorer's model may then
    # replace it (``merge``); ``learned:DIR@uss`` spells one shot. Not part of the method's identity.
    schedule_spelled: bool = field(default=True, compare=False, repr=False)

    @property
    def stacked(self) -> bool:
        return len(self.scorers) == 2

    @property
    def iterative(self) -> bool:
        return self.schedule in ITERATIVE

    @property
    def rewinds(self) -> bool:
        """Each level trains from θ0 again (iss, ims); a gradual schedule (gss, gms) trains on instead."""
        return self.schedule in REWINDING

    @property
    def sibling(self) -> bool:
        """The same method from the same θ0 with an independent data order and pruning batch (``!sibling``)."""
        return self.ablation == SIBLING

    @property
    def multi_shot(self) -> bool:
        return self.schedule in MULTI_SHOT

    @property
    def trains(self) -> bool:
        """It trains a network: an iterative schedule or a warm-up, its own or its budget method's."""
        inner = self.budget_method
        return self.iterative or self.warmup is not None or (inner is not None and inner.trains)

    @property
    def dynamic(self) -> bool:
        """The ticket's mask changes while it trains (RigL): dynamic sparse training, not pruning at init."""
        return self.schedule == DYNAMIC

    @property
    def saw(self) -> bool:
        return self.init not in BASE_INITS

    @property
    def budget_method(self) -> Method | None:
        """The method whose per-layer counts this one keeps (``#from:M``), parsed."""
        if self.budget is None or not self.budget.startswith(FROM):
            return None
        return parse_method(self.budget[len(FROM) :])

    @property
    def learned_models(self) -> tuple[str, ...]:
        names = (*self.scorers, self.init)
        own = tuple(n[len(LEARNED) :] for n in names if n.startswith(LEARNED))
        inner = self.budget_method
        return own + (inner.learned_models if inner is not None else ())

    def schedule_settings(self, schedule) -> dict:
        """The method and the schedule settings it uses (JSON-able): rounds only for a multi-shot schedule,
        levels only for an iterative one; what a ticket's recorded config says of how it was pruned."""
        return {
            "method": self.canonical(),
            "scope": schedule.scope,
            "rounds": schedule.rounds if self.multi_shot else None,
            "levels": schedule.levels if self.iterative else None,
        }

    def canonical(self) -> str:
        parts = _suffix(
            self.schedule, self.rounds, self.warmup, self.budget, self.init, self.ablation, self.warmup_in_steps
        )
        return ">".join(self.scorers) + parts

    def __str__(self) -> str:
        return self.canonical()

    def slug(self) -> str:
        """The spelling as a file-name part (an evaluation unit's file)."""
        return slug(self.canonical())

    def label(self, model: Callable[[str], str] | None = None, *, compact: bool = False) -> str:
        """The short name tables and plots print: the canonical spelling with every learned scorer
        ``learned:DIR`` as ``model(DIR)`` (default ``L:`` and the folder's name). ``compact`` (plot axes)
        also writes ``magnitude`` as ``mag`` and ``magnitude@iss`` as ``imp``, and drops the default ``@uss``."""
        model = model or folder_label

        def name(scorer: str) -> str:
            if scorer.startswith(LEARNED):
                return model(scorer[len(LEARNED) :])
            return "mag" if compact and scorer == "magnitude" else scorer

        if compact and self.scorers == ("magnitude",) and self.schedule == "iss":
            head, schedule = IMP, None
        else:
            head = ">".join(name(s) for s in self.scorers)
            schedule = None if compact and self.schedule == "uss" and self.rounds is None else self.schedule
        budget = self.budget
        inner = self.budget_method
        if inner is not None:
            budget = FROM + inner.label(model, compact=compact)
        init = self.init if self.init in BASE_INITS else name(self.init)
        return head + _suffix(schedule, self.rounds, self.warmup, budget, init, self.ablation, self.warmup_in_steps)

    def variant(self, **parts: Any) -> Method:
        """This method with ``parts`` replaced (e.g. ``ablation='shuffle'``, ``warmup=3.0``), refused as
        ``parse_method`` would refuse its spelling."""
        method = replace(self, **parts)
        _check_meaning(method, method.canonical())
        return method

    def merge(self, use: IntendedUse) -> Method:
        """This method with the parts it leaves at their defaults taken from ``use`` (a learned scorer's
        intended use): its schedule (and rounds) when this one spells none, its warm-up and budget when this
        one has none and is upfront; a part this method spells (``@uss`` included) overrides the use's."""
        parts: dict[str, Any] = {}
        if self.warmup is None and use.warmup is not None and not self.iterative:
            parts["warmup"] = float(use.warmup)
        if self.schedule == "uss" and not self.schedule_spelled and use.schedule not in (None, "uss"):
            parts["schedule"] = use.schedule
            if self.rounds is None and use.rounds is not None:
                parts["rounds"] = int(use.rounds)
        if self.budget is None and use.budget is not None and not self.iterative:
            parts["budget"] = use.budget
        return replace(self, **parts) if parts else self

    @property
    def learned_model(self) -> str | None:
        """The model folder of the method's (last) learned scorer, the one whose intended use it takes."""
        own = [s[len(LEARNED) :] for s in self.scorers if s.startswith(LEARNED)]
        return own[-1] if own else None


def _suffix(
    schedule: str | None,
    rounds: int | None,
    warmup: float | None,
    budget: str | None,
    init: str = "standard",
    ablation: str | None = None,
    in_steps: bool = False,
) -> str:
    """``@schedule[N][+wE|+wNs][#budget][~init][!ablation]``, each part spelled only when given (``schedule``
    None: not spelled)."""
    text = "" if schedule is None else "@" + schedule + ("" if rounds is None else str(rounds))
    if warmup is not None:
        text += f"+w{int(warmup)}s" if in_steps else f"+w{float(warmup):g}"
    if budget is not None:
        text += "#" + budget
    if init != "standard":
        text += "~" + init
    if ablation:
        text += "!" + ablation
    return text


def folder_label(model_dir: str) -> str:
    """A learned scorer's short name: ``L:`` and its model folder's name."""
    return "L:" + Path(model_dir).name


def learned_name(model_dir: str | Path) -> str:
    """The scorer name of the fitted model in ``model_dir``: ``learned:MODEL_DIR``."""
    return LEARNED + str(model_dir)


def learned_method(model_dir: str | Path, schedule: str | None = None) -> Method:
    """The method that prunes with the fitted model in ``model_dir`` (under ``schedule``, else the bare
    scorer's ``uss`` that its intended use may replace); a folder the grammar cannot spell is refused."""
    return parse_method(learned_name(model_dir) + ("" if schedule is None else "@" + schedule))


def budget_from(method: Method) -> str:
    """The budget that keeps ``method``'s per-layer counts (``#from:M``)."""
    return FROM + method.canonical()


def slug(text: str) -> str:
    """A spelling of the grammar as a file-name part: ``>`` as ``+``, ``~`` as ``-on-``, ``@`` as ``-``, any
    other character outside ``[A-Za-z0-9_.+-]`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text.replace(">", "+").replace("~", "-on-").replace("@", "-"))


@dataclass(frozen=True)
class IntendedUse:
    """How a fitted model is meant to prune, the suffix a bare ``learned:DIR`` takes from it
    (``Method.merge``); None where the model does not say (old models) or takes the default."""

    schedule: str | None = None
    rounds: int | None = None
    budget: str | None = None
    warmup: float | None = None  # the warm-up of the dynamics features it reads

    @classmethod
    def from_meta(cls, entry: Any) -> IntendedUse:
        entry = entry if isinstance(entry, dict) else {}
        return cls(**{k: entry.get(k) for k in ("schedule", "rounds", "budget", "warmup")})

    def to_meta(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "rounds": self.rounds, "budget": self.budget, "warmup": self.warmup}

    def suffix(self) -> str:
        """The method suffix a bare ``learned:DIR`` takes from the model, e.g. ``@ums10+w3#learned``."""
        return _suffix(self.schedule or "uss", self.rounds, self.warmup, self.budget)


def parse_use(text: str, warmup: float | None = None) -> IntendedUse:
    """A model's intended use from a method suffix (``fit --use``): ``@schedule`` (upfront: uss or ums,
    with rounds) and ``#budget`` (``#learned``: the model's own budget); '' prunes in one shot. ``warmup``:
    the epochs of the warm-up its dynamics features read (None: it reads none)."""
    spelled = str(text or "").strip()
    if spelled and spelled[0] not in "@#":
        raise MetapruneError(
            f"bad use {text!r}; accepted: a method suffix such as @ums, #layer or #from:synflow@ums"
        )
    try:
        parts = _parse_parts(spelled, 0, None)
    except MetapruneError as exc:
        raise MetapruneError(f"bad use {text!r}: {exc}") from None
    other = [sep for sep in parts if sep not in "@#"]
    if other:
        raise MetapruneError(
            f"bad use {text!r}: {other[0]!r} is not part of a use (the warm-up is the harvest's, init and "
            "ablation are the method's); accepted: @schedule and #budget, e.g. @ums10#learned"
        )
    schedule, rounds = parts.get("@", ("uss", None))  # type: ignore[misc]
    if schedule in ITERATIVE:
        raise MetapruneError(f"bad use {text!r}; accepted: the upfront schedules uss or ums")
    budget = parts.get("#")
    return IntendedUse(str(schedule), rounds, budget, None if warmup is None else float(warmup))  # type: ignore[arg-type]


@dataclass(frozen=True)
class DenseUnit:
    """An evaluation's unpruned network, trained from ``init`` beside the tickets: ``dense`` (standard
    init), ``dense~bimodal`` or ``dense~SCORER`` (SaW weights)."""

    init: str = "standard"

    def canonical(self) -> str:
        return DENSE if self.init == "standard" else f"{DENSE}~{self.init}"

    def __str__(self) -> str:
        return self.canonical()

    def slug(self) -> str:
        return slug(self.canonical())

    def label(self, model: Callable[[str], str] | None = None, *, compact: bool = False) -> str:
        return self.canonical()

    @property
    def init_method(self) -> Method:
        """A method of this init, whose θ0 the dense network trains from (``apply.initial_network``)."""
        return Method(("magnitude",), "uss", self.init)


Unit = Method | DenseUnit


def parse_unit(text: str) -> Unit:
    """An evaluation unit's spelling: ``dense[~init]`` or a method."""
    text = text.strip()
    if text == DENSE:
        return DenseUnit()
    if text.startswith(DENSE + "~"):
        return DenseUnit(_init_name(text[len(DENSE) + 1 :], text, len(DENSE) + 1))
    return parse_method(text)


def parse_units(texts: Iterable[str], strict: bool = True) -> dict[str, Unit]:
    """Each distinct spelling of ``texts`` (e.g. a results table's ``method`` column) parsed once; not
    ``strict``: a spelling that is no unit is left out instead of refused."""
    out: dict[str, Unit] = {}
    for text in dict.fromkeys(str(t) for t in texts):
        try:
            out[text] = parse_unit(text)
        except MetapruneError:
            if strict:
                raise
    return out


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
    raise _fail(
        text,
        pos,
        f"unknown scorer {token!r}, accepted: {accepted}, gemE (GEM-MINER, E epochs), imp (= magnitude@iss), "
        "rigl (= random@rigl#erk) or learned:DIR",
    )


# a model directory may hold '+' (e.g. scores+structure), but not '+w<number>', which starts a warm-up; a name
# is any word (letters of every script included), so an unknown one is echoed whole ('snïp', not 'sn')
_TOKEN = re.compile(re.escape(LEARNED) + r"(?:[^@~!>#+]|\+(?!w[0-9.]))*|[^\W\d]\w*")
_SCHEDULE = re.compile(r"(uss|ums|iss|ims|gss|gms|rigl)([0-9]+)?")
_EPOCHS = re.compile(r"w([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(s?)")
_BUDGET_FROM = re.compile(r"from:[^~!]*")


def parse_method(text: str, **overrides: Any) -> Method:
    """Parse a method string; errors point at the offending character (1-based, in the stripped text).
    ``overrides`` (e.g. ``warmup=3.0``) replace parts of the parsed method before its meaning is checked."""
    text = text.strip()
    if not text:
        raise MetapruneError(f"empty method; {SHORT_HELP}")
    scorers, schedule, pos = _parse_scorers(text)
    fixed = {"iss": IMP, DYNAMIC: RIGL}.get(schedule or "")  # 'imp' or 'rigl' fixed the schedule
    parts = _parse_parts(text, pos, fixed)
    rounds = None
    if "@" in parts:
        schedule, rounds = parts["@"]  # type: ignore[misc]
    spelled = schedule is not None
    if schedule is None:
        schedule, rounds = _default_schedule(scorers[-1])
    if fixed == RIGL and "#" not in parts:
        parts["#"] = "erk"  # RigL's paper distributes its density over layers by ERK
    warmup, in_steps = parts.get("+", (None, False))  # type: ignore[misc]
    method = Method(
        tuple(scorers),
        str(schedule),
        str(parts.get("~", "standard")),
        parts.get("!"),  # type: ignore[arg-type]
        warmup,
        parts.get("#"),  # type: ignore[arg-type]
        rounds,
        bool(in_steps),
        spelled,
    )
    if overrides:
        method = replace(method, **overrides)
        text = method.canonical()
    _check_meaning(method, text)
    return method


def _parse_parts(text: str, pos: int, fixed: str | None) -> dict[str, object]:
    """The parts after the scorers (from ``pos``), by separator: ``{'@': (schedule, rounds), '+': (length, steps),
    '#': budget, '~': init, '!': ablation}``; ``fixed``: 'imp' or 'rigl', which fixed the schedule already."""
    parts: dict[str, object] = {}
    order = "@+#~!"
    while pos < len(text):
        sep = text[pos]
        if sep not in order:
            raise _fail(text, pos, "expected '@schedule', '+wE', '#budget', '~init', '!ablation' or the end")
        if sep in parts:
            raise _fail(text, pos, f"{sep!r} given twice")
        if any(order.index(s) > order.index(sep) for s in parts):
            raise _fail(text, pos, "parts must come in the order @schedule +wE #budget ~init !ablation")
        if sep == "@" and fixed:
            spelled = "magnitude@iss" if fixed == IMP else "random@rigl#erk"
            raise _fail(text, pos, f"{fixed!r} already fixes the schedule ({spelled}); write SCORER@SCHEDULE")
        parts[sep], pos = _parse_part(sep, text, pos + 1)
    return parts


def _default_schedule(scorer: str) -> tuple[str, int | None]:
    """The schedule (and rounds) a bare scorer name means: its paper's (synflow: ums, ntksap: ums20)."""
    from metaprune.pruning.scorers import SCORERS

    if scorer.startswith(LEARNED):  # a model card's intended use is merged later (fit.learned)
        return "uss", None
    spec = SCORERS.get(scorer)
    return spec.default_schedule, spec.default_rounds


def _parse_scorers(text: str) -> tuple[list[str], str | None, int]:
    pos = 0
    scorers: list[str] = []
    schedule = None
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            raise _fail(text, pos, "expected a scorer name")
        token = m.group(0)
        if token in (IMP, RIGL):
            # 'imp' is magnitude@iss, 'rigl' random@rigl: a whole scorer + schedule, so neither can be stacked
            if scorers or text[m.end() : m.end() + 1] == ">":
                spelled, example = ("magnitude@iss", "mag>snip@iss") if token == IMP else ("random@rigl", "snip@rigl")
                raise _fail(text, pos, f"{token!r} (= {spelled}) cannot be part of a stack; write e.g. {example}")
            scorers.append("magnitude" if token == IMP else "random")
            schedule = "iss" if token == IMP else DYNAMIC
        else:
            scorers.append(_canonical_scorer(token, text, pos))
        pos = m.end()
        if pos < len(text) and text[pos] == ">":
            if len(scorers) == 2:
                raise _fail(text, pos, "a stack has at most two scorers (A>B)")
            pos += 1
            continue
        return scorers, schedule, pos


def _parse_part(sep: str, text: str, pos: int) -> tuple[object, int]:
    """The value after separator ``sep`` (starting at ``pos``) and the position after it."""
    if sep == "+":
        m = _EPOCHS.match(text, pos)
        if not m:
            raise _fail(text, pos, "expected a warm-up 'wE' after '+', E dense epochs or N steps, e.g. +w3 or +w100s")
        length, in_steps = float(m.group(1)), bool(m.group(2))
        if in_steps and not (length >= 1 and length.is_integer()):
            raise _fail(text, pos, f"warm-up of {m.group(1)} steps; accepted: a whole number of SGD steps, e.g. +w100s")
        if not length > 0:
            raise _fail(text, pos, f"warm-up of {m.group(1)} epochs; accepted: a positive number of epochs")
        return (length, in_steps), m.end()
    if sep == "#":
        m = _BUDGET_FROM.match(text, pos)
        if m:
            return _budget_from(m.group(0), text, pos), m.end()
    m = _TOKEN.match(text, pos)
    if not m:
        raise _fail(text, pos, f"expected a name after {sep!r}")
    word = m.group(0)
    if sep == "@":
        sm = _SCHEDULE.fullmatch(word)
        if not sm:
            raise _fail(
                text,
                pos,
                f"unknown schedule {word!r}, accepted: {', '.join(SCHEDULE_NAMES)}, optionally with "
                "a number of multi-shot rounds (ums20)",
            )
        name, count = sm.group(1), sm.group(2)
        if count is not None and name not in MULTI_SHOT:
            raise _fail(
                text, pos, f"{name} is single-shot, so it has no rounds; accepted: ums{count}, ims{count} or gms{count}"
            )
        if count is not None and int(count) < 1:
            raise _fail(text, pos, f"{count} rounds; accepted: a positive number of rounds, e.g. ums20")
        return (name, None if count is None else int(count)), m.end()
    if sep == "#":
        if word not in BUDGETS:
            raise _fail(text, pos, f"unknown budget {word!r}, accepted: global, layer, learned, erk, from:METHOD")
        return word, m.end()
    if sep == "~":
        return _init_name(word, text, pos), m.end()
    if word not in (*ABLATIONS, SIBLING):
        raise _fail(text, pos, f"unknown ablation {word!r}, accepted: {', '.join(ABLATIONS)}, {SIBLING}")
    return word, m.end()


def _budget_from(token: str, text: str, pos: int) -> str:
    inner_text = token[len(FROM) :]
    if not inner_text:
        raise _fail(text, pos + len(token), "expected a method after 'from:', e.g. #from:synflow@ums")
    try:
        inner = parse_method(inner_text)
    except MetapruneError as exc:
        raise _fail(text, pos + len(FROM), f"bad budget method ({exc})") from None
    if inner.budget is not None or inner.init != "standard" or inner.ablation is not None:
        raise _fail(text, pos + len(FROM), "a budget method has no budget, init or ablation of its own")
    if inner.learned_model is not None and not inner.schedule_spelled:
        # left unspelled, so that the learned scorer's card fills it in (``with_intended_use``)
        return FROM + ">".join(inner.scorers) + _suffix(None, None, inner.warmup, None, in_steps=inner.warmup_in_steps)
    return FROM + inner.canonical()


def _check_meaning(method: Method, text: str) -> None:
    """Refuse combinations that parse but mean nothing, saying why."""
    from metaprune.pruning.scorers import SCORERS

    registered = [s for s in method.scorers if not s.startswith(LEARNED)]
    if method.saw and not method.init.startswith(LEARNED) and SCORERS.get(method.init).needs_warmup:
        raise MetapruneError(
            f"method {text!r}: SaW scores θ0, but {method.init!r} reads a warm-up; accepted: a θ0 scorer as init"
        )
    if method.warmup is not None and method.rewinds:
        needing = [s for s in registered if SCORERS.get(s).needs_warmup]
        if needing:
            raise MetapruneError(
                f"method {text!r}: under {method.schedule!r} the +w part is the training budget its levels share, "
                f"not a warm-up, and scorer {needing[0]!r} reads a warm-up; accepted: {needing[0]}+wE (uss or ums), "
                f"or {needing[0]}@gss+wE (gradual: the trajectory of its levels)"
            )
    if method.warmup is not None:
        blind = [s for s in registered if not SCORERS.get(s).reads_weights]
        if len(blind) == len(method.scorers):
            raise MetapruneError(
                f"method {text!r}: scorer {blind[0]!r} reads no weights, so a warm-up (+w) cannot change its "
                "scores; accepted: +wE on a scorer that reads the network (e.g. magnitude, snip, delta)"
            )
    else:
        needing = [s for s in registered if SCORERS.get(s).needs_warmup]
        if needing:
            raise MetapruneError(
                f"method {text!r}: scorer {needing[0]!r} reads a warm-up; accepted: give one, e.g. {needing[0]}+w3"
            )
    if method.budget == "learned" and not method.scorers[-1].startswith(LEARNED):
        raise MetapruneError(
            f"method {text!r}: the budget 'learned' is the per-layer split a learned scorer's model predicts, and "
            f"{method.scorers[-1]!r} has none; accepted: learned:DIR#learned, or #from:learned:DIR for any scorer"
        )
    sized = [s for s in (*method.scorers[:-1], *((method.init,) if method.saw else ())) if _sized(s)]
    if sized:
        raise MetapruneError(
            f"method {text!r}: scorer {sized[0]!r} ranks only as many weights as a prune keeps, so it cannot "
            f"score for a stack's first scorer or an init; accepted: {sized[0]!r} as the method's last scorer, "
            f"e.g. {sized[0]}, magnitude>{sized[0]}, {sized[0]}#erk"
        )
    if method.sibling and not (method.trains or any(_draws_data(s) for s in method.scorers)):
        raise MetapruneError(
            f"method {text!r}: a sibling differs in data order and pruning batch only, and "
            f"{replace(method, ablation=None)} draws on neither (it neither trains nor reads a pruning batch), so "
            "its sibling is itself; accepted: !sibling on an iterative method, a warm-up or a scorer that reads "
            "data, e.g. synflow@ims10!sibling, imp!sibling, snip!sibling"
        )
    if method.budget is not None and method.iterative:
        raise MetapruneError(
            f"method {text!r}: a budget (#) applies to the upfront schedules uss and ums; accepted: "
            f"drop '#{method.budget}' or use --scope with {method.schedule}"
        )


def _draws_data(name: str) -> bool:
    """The scorer reads the pruning batch (a learned scorer's features do)."""
    from metaprune.pruning.scorers import SCORERS

    return name.startswith(LEARNED) or SCORERS.get(name).needs_data


def _sized(name: str) -> bool:
    from metaprune.pruning.scorers import SCORERS

    return not name.startswith(LEARNED) and name in SCORERS and SCORERS.get(name).sized


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
