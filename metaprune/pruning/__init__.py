"""Pruning at initialisation: scorers, exact top-k masks, stacked scoring, SaW inits and ablations.

Everything works on the flat weight axis of ``networks.prunable_layout`` so that scores, masks and the
harvest store line up weight for weight.
"""
