"""metaprune: learn how to prune a network before training.

The library is organised by job: ``datasets`` and ``networks`` build the inputs, ``training`` is the one
train/eval loop (populations of K networks at once), ``pruning`` holds scorers, masks and schedules,
``harvest``/``fit``/``evaluate`` are the three user-facing pipelines. Every CLI command is a thin wrapper
around a function of this package.
"""

from metaprune.pruning.method import LEARNED

__version__ = "0.1.0"

# Names an upper layer resolves for a registry of a lower one: (registry kind, prefix) -> the module whose
# import registers the resolver (``Registry.register_prefix``). ``learned:DIR`` scorers are fitted models.
PREFIX_PROVIDERS = {("scorer", LEARNED): "metaprune.fit.learned"}
