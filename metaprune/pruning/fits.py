"""What a parsed method needs of a network, checked once before any work (``prune``, ``evaluate``).

An ERK budget must keep a weight of every layer at the density; a scorer that scores only some networks
(``ScorerSpec.fits``: PHEW walks chains of Linear layers) must accept this one. The budget's own method is
checked too. Learned scorers are checked by their model card (``ModelCard.check_fits``).
"""

from __future__ import annotations

from torch import nn

from metaprune.networks import prunable_layout
from metaprune.pruning.budgets import erk_counts
from metaprune.pruning.method import LEARNED, Method
from metaprune.pruning.scorers import SCORERS


def check_method_for_network(method: Method, net: nn.Module, density: float) -> None:
    """Raise ``MetapruneError`` (one line) if ``method`` cannot prune ``net`` to ``density``."""
    layout = prunable_layout(net)
    for part in (method, method.budget_method):
        if part is None:
            continue
        if part.budget == "erk":
            erk_counts(layout, density, str(method))
        for name in (*part.scorers, *((part.init,) if part.saw else ())):
            fits = None if name.startswith(LEARNED) else SCORERS.get(name).fits
            if fits is not None:
                fits(net)
