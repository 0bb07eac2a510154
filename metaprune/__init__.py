"""metaprune: learn how to prune a network before training.

The library is organised by job: ``datasets`` and ``networks`` build the inputs, ``training`` is the one
train/eval loop (populations of K networks at once), ``pruning`` holds scorers, masks and schedules,
``harvest``/``fit``/``evaluate`` are the three user-facing pipelines. Every CLI command is a thin wrapper
around a function of this package. ``metaprune.prune_module`` prunes a user's own ``nn.Module``
(``metaprune.user_module``); it is imported on first use, so ``import metaprune`` stays light.
"""

from metaprune.pruning.method import LEARNED

__version__ = "0.1.0"

# Names an upper layer resolves for a registry of a lower one: (registry kind, prefix) -> the module whose
# import registers the resolver (``Registry.register_prefix``). ``learned:DIR`` scorers are fitted models.
PREFIX_PROVIDERS = {("scorer", LEARNED): "metaprune.fit.learned"}


def __getattr__(name: str):
    if name == "prune_module":
        from metaprune.user_module import prune_module

        return prune_module
    raise AttributeError(f"module 'metaprune' has no attribute {name!r}")


__all__ = ["PREFIX_PROVIDERS", "__version__", "prune_module"]
