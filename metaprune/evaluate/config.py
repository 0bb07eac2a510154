"""What an evaluation runs: methods × densities × seeds, the training and schedule configs, presets.

Methods are spelled (``snip``, ``learned:DIR``) by users and presets, and parsed once, when an
``EvaluateConfig`` is made: below that, every method is a ``Method``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from metaprune.config import PER_CLASS, Config, ScheduleConfig, TrainConfig
from metaprune.errors import MetapruneError
from metaprune.fit.learned import with_intended_use
from metaprune.fit.persist import ModelCard, model_folders, newest_model
from metaprune.pruning.masks import check_density
from metaprune.pruning.method import DenseUnit, Method, Unit, budget_from, learned_method, parse_method

BASELINES = ("random", "magnitude", "snip", "grasp", "synflow")
COMPOSITE = "magnitude>synflow~snip"  # the thesis's best at-init composite (stacked scoring on SaW weights)
# The strongest at-init baseline of the thesis's scorers (SynFlow in 100 UMS rounds): what a learned
# scorer must beat.
DEFAULT_REFERENCE = "synflow@ums"
THESIS_DENSITIES = (0.005, 0.007, 0.01, 0.015, 0.1, 0.2, 0.5)
DEFAULT_SEEDS = tuple(range(1000, 1005))  # disjoint from the harvest's default seeds


@dataclass(frozen=True)
class Ceiling:
    """An iterative reference a table measures gap closure towards (thesis 5.14)."""

    name: str  # as typed and as the table's header names it
    method: Method
    stem: str  # the comparison's columns: STEM, STEM_lo, STEM_hi


CEILINGS = (
    Ceiling("imp", parse_method("imp"), "gap_imp"),
    Ceiling("synflow@ims", parse_method("synflow@ims"), "gap_synflow_ims"),
)

# Thesis figure 5.14's top rows, spelled in our grammar (UMS where the thesis ran UMS).
COMBINED = (
    "magnitude>synflow@ums~snip",
    "synflow>magnitude@ums~snip",
    "imp",
    "synflow@ums~snip",
    "grasp>magnitude@ums",
    "snip>snip@ums",
    "snip>magnitude@ums~synflow",
    "snip@ums",
    "snip@ums~synflow",
    "snip>snip@ums~bimodal",
    "magnitude>synflow@ums~synflow",
    "snip>synflow@ums",
    "magnitude>snip@ums",
    "synflow>magnitude@ums",
    "grasp>magnitude@ums~synflow",
    "magnitude>snip@ums~snip",
    "snip>magnitude@ums",
    "synflow@ums",
    "snip>snip@ums~synflow",
    "magnitude>synflow@ums",
)


@dataclass(frozen=True)
class EvaluateConfig(Config):
    kind: ClassVar[str] = "evaluate"

    network: str = "lenet_300_100"
    dataset: str = "mnist5k"
    # spellings given here (a preset's, a user's, a results directory's config.json) are parsed on construction
    methods: tuple[Method, ...] = tuple(parse_method(m) for m in (*BASELINES, COMPOSITE))
    densities: tuple[float, ...] = (0.005,)
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    reference: Method = parse_method(DEFAULT_REFERENCE)
    test: str = "ttest"
    per_class: int = PER_CLASS
    dense_inits: tuple[str, ...] = ()  # extra dense rows trained from these inits (SaW preset)

    def __post_init__(self) -> None:
        # the one place an evaluation's method spellings are parsed; a bad one is refused here, in one line
        methods = tuple(m if isinstance(m, Method) else parse_method(m) for m in self.methods)
        object.__setattr__(self, "methods", methods)
        if not isinstance(self.reference, Method):
            object.__setattr__(self, "reference", parse_method(self.reference))

    def validate(self) -> EvaluateConfig:
        """The checked config: each learned method with its model's intended use, the reference among the
        methods, duplicates dropped, densities in range and sorted. Checking a checked config again
        changes nothing."""
        if not self.methods and not self.dense_inits:
            raise MetapruneError("no methods to evaluate; accepted: --method METHOD (repeatable) or --preset NAME")
        merged = [with_intended_use(m) for m in self.methods]
        reference = with_intended_use(self.reference)
        if self.methods and reference.canonical() not in {m.canonical() for m in merged}:
            merged.append(reference)  # every method is compared with it, so it is always evaluated
        methods = tuple({m.canonical(): m for m in merged}.values())
        if self.test not in ("ttest", "wilcoxon"):
            raise MetapruneError(f"unknown test {self.test!r}; accepted: ttest, wilcoxon")
        if not self.seeds:
            raise MetapruneError("no seeds to evaluate; accepted: e.g. --seeds 1000-1004")
        if not self.densities:
            raise MetapruneError("no densities; accepted: one or more densities, e.g. 0.005")
        densities = tuple(sorted({check_density(d) for d in self.densities}))  # per network: run_evaluation
        self.train.validate()
        self.schedule.validate()
        return replace(
            self, methods=methods, reference=reference, densities=densities, seeds=tuple(sorted(set(self.seeds)))
        )


def planned_units(config: EvaluateConfig) -> list[tuple[Unit, float]]:
    """(method, density) of every pruned unit, then (dense unit, 1.0) of every dense one."""
    units: list[tuple[Unit, float]] = [(m, d) for d in config.densities for m in config.methods]
    inits = ("standard", *[i for i in config.dense_inits if i != "standard"])
    units += [(DenseUnit(i), 1.0) for i in inits]
    return units


JACKPOT_BASELINES = (
    "random",
    "magnitude",
    "snip",
    "grasp_abs",
    "synflow@ums",
    "magnitude>synflow~snip",
    "prospr",  # the strongest published scorer that looks a few steps ahead
    # the peers since SynFlow (each checked against its authors' code)
    "ntksap",
    "force",
    "snip@ums60",  # iterative SNIP, FORCE's own baseline
    "phew",
    "gem",  # GEM-MINER: mask scores learned with θ0 frozen (20 epochs)
    # allocation-only controls: which weights vs how many per layer
    "random#from:synflow@ums",
    "random#erk",
)
# the equal-cost baselines of a model's warm-up: one look after a dense warm-up, and pruning gradually over it
JACKPOT_WARMUP_SCORERS = ("delta", "movement", "magnitude", "snip", "synflow@ums", "delta@gss", "movement@gss")
# not pruning at init: dynamic sparse training at the ticket's density (a section of its own in the table)
JACKPOT_DYNAMIC = ("rigl",)
JACKPOT_SEEDS = tuple(range(1000, 1030))
IMP = "imp"


def target_ceilings(models: tuple[str | Path, ...]) -> tuple[tuple[Method, ...], int | None]:
    """The ceilings of learned models: each model's harvest target as a method (its own ticket, e.g.
    ``synflow@ims10``), and the levels those targets trained. Models of targets with different levels
    cannot share one evaluation's schedule config, which is one-line refused."""
    tickets = {ModelCard.read(m).target_ticket for m in models}
    levels = {lv for _, lv in tickets if lv is not None}
    if len(levels) > 1:
        raise MetapruneError(
            f"the models imitate targets of different levels ({', '.join(map(str, sorted(levels)))}); accepted: "
            "models harvested with one --levels, or --levels and -m for each ceiling"
        )
    methods = {method.canonical(): method for method, _ in tickets}
    return tuple(methods[k] for k in sorted(methods)), (levels.pop() if levels else None)


Spelled = str | Method  # a method as typed, or parsed already


def jackpot_methods(models: tuple[str | Path, ...], models_dir: Path) -> tuple[tuple[Spelled, ...], int | None]:
    """Did the learned scorer hit the jackpot: upfront baselines and peers, allocation-only controls,
    warm-up baselines of every warm-up the models use (equal compute), each model as its card says, under
    !shuffle / !reinit and with its per-layer counts filled at random or by magnitude, the ceilings:
    ``imp`` and each model's own target ticket, and RigL (dynamic sparse training, not pruning at init).
    Returns the methods and the targets' levels."""
    if not models:
        newest = newest_model(models_dir)
        if newest is None:
            raise MetapruneError(
                f"preset 'jackpot' needs a fitted model and none is under {models_dir}; accepted: run "
                "`metaprune harvest` then `metaprune fit --model mlp`, or give --model DIR"
            )
        models = (newest,)
    own = tuple(with_intended_use(learned_method(m)) for m in models)
    warmups = sorted({m.warmup for m in own if m.warmup is not None})
    warm = tuple(parse_method(s, warmup=w) for w in warmups for s in JACKPOT_WARMUP_SCORERS)
    sanity = tuple(m.variant(ablation=a) for m in own for a in ("shuffle", "reinit"))
    # the model's per-layer counts filled at random or by magnitude: does its choice within layers matter?
    controls = tuple(
        parse_method(s, budget=budget_from(m)) for m in own for s in ("random", "magnitude") if m.budget is None
    )
    ceilings, levels = target_ceilings(models)
    # imp is a ceiling of every model, and the own ticket of a model fitted on an imp store: listed once
    ceilings = (IMP, *(c for c in ceilings if c != parse_method(IMP)))
    return JACKPOT_BASELINES + warm + own + sanity + controls + ceilings + JACKPOT_DYNAMIC, levels


# the warm-up sweep: lengths (+wL; 's' = SGD steps) and the methods of equal cost at each (imp+wL: the levels
# share L; magnitude@gss+wL: gradual magnitude pruning over L, and movement and delta reading that gradual
# run's trajectory), beside the at-init methods (length 0)
WARMUP_SWEEP = ("100s", "300s", "1", "3")
WARMUP_SWEEP_SCORERS = (
    "movement",
    "delta",
    "magnitude",
    "mag_increase",
    "snip@ums",
    "synflow@ums",
    IMP,
    "magnitude@gss",
    "movement@gss",
    "delta@gss",
)
WARMUP_SWEEP_AT_INIT = ("magnitude", "snip@ums", "synflow@ums")


def warmup_sweep_methods(models: tuple[str | Path, ...]) -> tuple[Method, ...]:
    """Each warm-up length of ``WARMUP_SWEEP`` (and of each model's own warm-up): every equal-cost method
    with it (movement, delta, magnitude at θ_E, magnitude increase, SNIP and SynFlow at θ_E, IMP whose levels
    share it, gradual magnitude pruning, movement and delta over it); the at-init methods (length 0); each
    model as its card says, and, when it reads no warm-up, at every length too (scoring θ_E); and full
    ``imp``, the ceiling (a level in the plot)."""
    own = tuple(with_intended_use(learned_method(m)) for m in models)
    lengths = [parse_method(f"magnitude+w{length}") for length in WARMUP_SWEEP]
    lengths += [m for m in own if m.warmup is not None]  # a model reads its own warm-up only: sweep it too
    spelled = {(m.warmup, m.warmup_in_steps) for m in lengths}
    sweep = tuple(
        parse_method(s, warmup=w, warmup_in_steps=steps) for w, steps in sorted(spelled) for s in WARMUP_SWEEP_SCORERS
    )
    learned = tuple(
        m.variant(warmup=w, warmup_in_steps=steps) for m in own if m.warmup is None for w, steps in sorted(spelled)
    )
    return tuple(parse_method(s) for s in (*WARMUP_SWEEP_AT_INIT, IMP)) + sweep + own + learned


def preset_methods(
    name: str, models_dir: Path = Path("models"), models: tuple[str | Path, ...] = ()
) -> tuple[tuple[Spelled, ...], tuple[float, ...], dict]:
    """(methods, densities, extra config fields) reproducing a thesis experiment by name."""
    if models and name not in ("jackpot", "warmup-sweep"):
        raise MetapruneError(
            f"--model is for presets 'jackpot' and 'warmup-sweep', not {name!r}; accepted: -m learned:DIR instead"
        )
    if name == "jackpot":
        methods, levels = jackpot_methods(models, models_dir)
        extra = {"seeds": JACKPOT_SEEDS, "reference": DEFAULT_REFERENCE, "levels": levels}
        return methods, (0.005, 0.01), extra
    if name == "warmup-sweep":
        return warmup_sweep_methods(models), (0.005, 0.01), {"reference": DEFAULT_REFERENCE}
    scorers4 = ("magnitude", "snip", "grasp", "synflow")
    if name == "baselines":
        return BASELINES, THESIS_DENSITIES, {"seeds": (1000, 1001, 1002)}
    if name == "schedules":
        return tuple(f"{s}@{sch}" for s in scorers4 for sch in ("uss", "ums", "iss", "ims")), (0.005, 0.01), {}
    if name == "stacked":
        return tuple(f"{a}>{b}" for a in scorers4 for b in scorers4) + BASELINES[1:], (0.005, 0.01), {}
    if name == "saw":
        inits = ("standard", "snip", "bimodal", "synflow", "grasp")
        methods = tuple(f"{s}~{i}" for s in scorers4 for i in inits)
        return methods, (0.005, 0.01), {"dense_inits": inits}
    if name == "combined":
        return COMBINED + BASELINES, (0.005, 0.01), {}
    if name == "meta":
        models = model_folders(models_dir)
        if not models:
            raise MetapruneError(
                f"preset 'meta' needs fitted models, none found under {models_dir}; accepted: run `metaprune fit` first"
            )
        # thesis 5.9: the learned scorers as the thesis used them, in one shot
        return tuple(learned_method(p, "uss") for p in models) + BASELINES, (0.005, 0.01), {}
    if name == "transfer":  # many networks, each its own evaluation: ``evaluate.transfer.run_transfer``
        raise MetapruneError("preset 'transfer' runs over a family; accepted: --preset transfer --family NAME")
    raise MetapruneError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")


PRESET_HELP = {
    "baselines": "thesis 5.1: random, magnitude, snip, grasp, synflow at 7 densities (0.005-0.5), 3 seeds",
    "schedules": "thesis 5.1.1: magnitude, snip, grasp, synflow under uss, ums, iss and ims at 0.005 and 0.01",
    "stacked": "thesis 5.3: every stack A>B of magnitude, snip, grasp, synflow, beside the single scorers",
    "saw": "thesis 5.4: scores as weight initialisation (standard, snip, bimodal, synflow, grasp) per scorer",
    "combined": "thesis 5.14: the thesis's best stacked + SaW combinations beside the baselines",
    "meta": "thesis 5.9: every model under models/ in one shot (as the thesis used them) beside the baselines",
    "jackpot": "did a learned scorer beat the best at-init and equal-compute warm-up methods: 30 seeds, 0.005 and "
    "0.01, sanity ablations, ceilings imp and the model's target ticket, against synflow@ums",
    "warmup-sweep": "accuracy vs warm-up length (0, 100 and 300 steps, 1 and 3 epochs) of the equal-cost methods: "
    "movement, delta, magnitude, mag_increase, snip@ums, synflow@ums with that warm-up, imp whose levels share it, "
    "gradual pruning over it (magnitude@gss, movement@gss, delta@gss), any --model, and full imp as the ceiling; plot "
    "accuracy_vs_warmup.png",
    "transfer": "leave one network out (--family NAME): a model fitted on the other members prunes each member "
    "zero-shot at its density, beside its own-harvest model, synflow@ums and the ceilings synflow@ims and imp",
}
PRESETS = tuple(PRESET_HELP)
