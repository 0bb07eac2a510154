"""The network behind ``fit --model mlp``: ``members`` independent ReLU MLPs on the same inputs.

The members are one module: each layer's weights are stacked ``[members, in, out]`` and run as one batched
matmul, so a step of M members costs about one pass of a wide net, and Adam (element-wise) on the stacked
tensors is M independent Adams. A member's loss does not see the others, so training them together is
training them apart; only their inits differ (each drawn from its own seed stream).

The ensemble predicts the mean of its members' outputs and ranks by the mean of their logits: averaging
smooths the top of the ranking, which a multi-shot learned scorer cuts ten times.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metaprune.seeds import generator


class MLPEnsemble(nn.Module):
    """``members`` MLPs ``n_features → hidden… → 1`` with ReLU; ``output`` sigmoid or linear."""

    def __init__(self, n_features: int, hidden: tuple[int, ...], members: int, output: str) -> None:
        super().__init__()
        widths = [int(n_features), *map(int, hidden), 1]
        self.members = int(members)
        self.output = output
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(self.members, a, b)) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.empty(self.members, 1, b)) for b in widths[1:]
        )

    def init_seeded(self, seed: int) -> MLPEnsemble:
        """PyTorch's default Linear init (uniform ±1/√fan_in), member m drawn from the stream (seed, m)."""
        with torch.no_grad():
            for m in range(self.members):
                g = generator(seed, "fit", 1, m)
                for w, b in zip(self.weights, self.biases, strict=True):
                    bound = 1.0 / math.sqrt(w.shape[1])
                    w[m].uniform_(-bound, bound, generator=g)
                    b[m].uniform_(-bound, bound, generator=g)
        return self

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[members, n]``: every member's pre-output value for the rows ``x`` [n, F]."""
        h = x.unsqueeze(0).expand(self.members, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.member_logits(x)
        return torch.sigmoid(logits) if self.output == "sigmoid" else logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's prediction: the mean of the members' outputs, ``[n]``."""
        return self.member_outputs(x).mean(0)

    def rank(self, x: torch.Tensor) -> torch.Tensor:
        """What the ensemble ranks by: the mean of the members' logits (a float32 sigmoid saturates)."""
        return self.member_logits(x).mean(0)
