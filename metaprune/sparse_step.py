"""The plain-SGD step of a group of compacted MLPs (``compaction``): per layer a dense GEMM or a CSR kernel.

Activations are feature-major: a boundary's activations are one ``[size, batch]`` matrix in which member
k's live units are rows ``offset[k] … offset[k] + width_k``. A boundary beside a dense layer is *padded*
(every member gets the group's widest width, so a batched GEMM sees ``[K, width, batch]``); a boundary
between two CSR layers is *packed* (widths back to back, nothing padded). The first layer reads one input
matrix for all members — the union of their live pixels — as the dense path's first GEMM does.

A CSR layer is one block-diagonal matrix for the whole group (the first layer: the members' rows stacked
over the shared input), so a step costs a few kernel calls whatever K is. Kernels are torch.sparse's
(MKL on CPU):

- forward       ``torch.sparse.addmm(b, W, A)``
- input grad    ``Wᵀ @ G`` through a CSR copy of Wᵀ whose values are gathered from W's before each use
- update        ``torch.sparse.sampled_addmm(W, G, Aᵀ, alpha=-lr, out=W)``: ``W ← W − lr·(G Aᵀ)`` on W's
  pattern, which holds exactly the kept weights: masked-gradient SGD with no pruned entry to re-zero.

A dense layer works as ``mlp_step``'s: the update folded into the weight-gradient GEMM, then re-masked.
Only the order of the sums differs from the dense path (see README, "Training"): a kept weight's update
sums the same products, a unit's pre-activation sums its kept inputs without the pruned zeros.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from metaprune.compaction import CompactMember

KINDS = ("dense", "csr")
_relu_backward = torch.ops.aten.threshold_backward.grad_input


class _Boundary:
    """Where each member's units sit in a boundary's ``[size, batch]`` activation matrix."""

    def __init__(self, widths: Sequence[int], padded: bool) -> None:
        self.widths = list(widths)
        self.pad = max(self.widths, default=0) if padded else None
        self.offsets, at = [], 0
        for w in self.widths:
            self.offsets.append(at)
            at += w if self.pad is None else self.pad
        self.size = at

    @classmethod
    def shared(cls, width: int, members: int) -> _Boundary:
        """The input: one matrix every member reads."""
        out = cls([width] * members, padded=False)
        out.offsets, out.size = [0] * members, width
        return out


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix from entries sorted by row then column; 32-bit indices, which MKL reads without a copy."""
    counts = torch.bincount(rows, minlength=shape[0])
    crow = torch.zeros(shape[0] + 1, dtype=torch.int32, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():  # torch says once per process that CSR support is "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols.to(torch.int32), values, size=shape, check_invariants=False)


class _Layer:
    """One layer of the group: its kernel, bias and the way to read a member's values back."""

    def __init__(self, index: int, kind: str, members: Sequence[CompactMember], b_in, b_out, pixel_pos) -> None:
        self.index, self.kind, self.first = index, kind, index == 0
        self.b_in, self.b_out = b_in, b_out
        ref = members[0].values[index]
        opts = {"dtype": ref.dtype, "device": ref.device}
        self.bias = torch.zeros(b_out.size, 1, **opts)
        grow, gcol, self.value_offsets = [], [], [0]
        for k, m in enumerate(members):
            self.bias[b_out.offsets[k] : b_out.offsets[k] + b_out.widths[k], 0] = m.biases[index]
            grow.append(m.rows[index] + b_out.offsets[k])
            cols = m.cols[index]
            gcol.append(pixel_pos[k][cols] if self.first else cols + b_in.offsets[k])
            self.value_offsets.append(self.value_offsets[-1] + cols.numel())
        self.rows, self.cols = torch.cat(grow), torch.cat(gcol)
        values = torch.cat([m.values[index] for m in members])
        shape = (b_out.size, b_in.size)
        if kind == "csr":
            self.weight = _csr(self.rows, self.cols, values, shape)
            if not self.first:
                self.perm = torch.argsort(self.cols * shape[0] + self.rows, stable=True)
                self.weight_t = _csr(self.cols[self.perm], self.rows[self.perm], values[self.perm], shape[::-1])
            return
        dense = torch.zeros(shape, **opts)
        dense[self.rows, self.cols] = values
        mask = torch.zeros(shape, **opts)
        mask[self.rows, self.cols] = 1.0
        self.weight, self.mask = dense, mask
        if not self.first:  # the block diagonal of a padded boundary pair, as [K, out, in]
            k, o, i = len(members), b_out.pad, b_in.pad
            self.weight = torch.stack([dense[j * o : (j + 1) * o, j * i : (j + 1) * i] for j in range(k)])
            self.mask = torch.stack([mask[j * o : (j + 1) * o, j * i : (j + 1) * i] for j in range(k)])

    def forward(self, a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``W a + b`` for a contiguous ``a`` of shape ``[in, batch]`` (into ``out`` when given)."""
        if self.kind == "csr" or self.first:
            return torch.addmm(self.bias, self.weight, a, out=out)
        k, batch = self.weight.shape[0], a.shape[1]
        out3 = None if out is None else out.view(k, -1, batch)
        return torch.baddbmm(self.bias.view(k, -1, 1), self.weight, a.view(k, -1, batch), out=out3).view(-1, batch)

    def input_grad(self, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``Wᵀ g`` into ``out``, with the weights before this step's update."""
        if self.kind == "csr":
            torch.index_select(self.weight.values(), 0, self.perm, out=self.weight_t.values())
            return torch.mm(self.weight_t, g, out=out)
        k, batch = self.weight.shape[0], g.shape[1]
        torch.bmm(self.weight.transpose(1, 2), g.view(k, -1, batch), out=out.view(k, -1, batch))
        return out

    def update(self, g: torch.Tensor, a_in: torch.Tensor, lr: float, bias_grad: torch.Tensor) -> None:
        """SGD on the kept weights and the biases; ``g`` and the layer input ``a_in`` are ``[·, batch]``."""
        if self.kind == "csr":
            torch.sparse.sampled_addmm(self.weight, g, a_in.t(), beta=1.0, alpha=-lr, out=self.weight)
        elif self.first:
            self.weight.addmm_(g, a_in.t(), alpha=-lr)
            self.weight.mul_(self.mask)
        else:
            k, batch = self.weight.shape[0], g.shape[1]
            self.weight.baddbmm_(g.view(k, -1, batch), a_in.view(k, -1, batch).transpose(1, 2), alpha=-lr)
            self.weight.mul_(self.mask)
        self.bias.sub_(torch.sum(g, 1, keepdim=True, out=bias_grad), alpha=lr)

    def member(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member k's kept weights and biases (copies)."""
        lo, hi = self.value_offsets[k], self.value_offsets[k + 1]
        if self.kind == "csr":
            values = self.weight.values()[lo:hi].clone()
        elif self.first:
            values = self.weight[self.rows[lo:hi], self.cols[lo:hi]]
        else:
            o, i = self.b_out.pad, self.b_in.pad
            values = self.weight[k][self.rows[lo:hi] - k * o, self.cols[lo:hi] - k * i]
        start = self.b_out.offsets[k]
        return values, self.bias[start : start + self.b_out.widths[k], 0].clone()


class _Workspace:
    """Every intermediate of one step for a batch of ``batch``: reused, as ``mlp_step``'s (fresh large
    temporaries cost page faults on every step)."""

    def __init__(self, pixels: int, layers: Sequence[_Layer], batch: int, ref: torch.Tensor) -> None:
        opts = {"dtype": ref.dtype, "device": ref.device}
        self.x = torch.empty(batch, pixels, **opts)
        self.y = torch.empty(batch, dtype=torch.long, device=ref.device)
        self.x_t = torch.empty(pixels, batch, **opts)
        self.acts = [torch.empty(layer.b_out.size, batch, **opts) for layer in layers]
        self.grads = [torch.empty(layer.b_in.size, batch, **opts) for layer in layers[1:]]
        self.bias_grads = [torch.empty(layer.b_out.size, 1, **opts) for layer in layers]


class CompactStep:
    """Plain-SGD training and evaluation of a group of compacted MLPs, one kernel kind per layer.

    ``members`` are the compact forms (their values are copied in); ``kinds[l]`` is ``"dense"`` or
    ``"csr"``. Inputs are rows of the group's input matrix, whose columns are :attr:`pixels`.
    """

    def __init__(self, members: Sequence[CompactMember], kinds: Sequence[str], lr: float) -> None:
        self.members, self.kinds, self.lr = list(members), tuple(kinds), lr
        n_layers = len(self.kinds)
        self.pixels = torch.unique(torch.cat([m.units[0] for m in self.members]))  # sorted
        pixel_pos = [torch.searchsorted(self.pixels, m.units[0]) for m in self.members]
        self.classes = self.members[0].widths[-1]
        bounds = [_Boundary.shared(len(self.pixels), len(self.members))]
        for j in range(1, n_layers + 1):
            beside_dense = self.kinds[j - 1] == "dense" or (j < n_layers and self.kinds[j] == "dense")
            bounds.append(_Boundary([m.widths[j] for m in self.members], padded=beside_dense or j == n_layers))
        self.layers = [
            _Layer(i, kind, self.members, bounds[i], bounds[i + 1], pixel_pos) for i, kind in enumerate(self.kinds)
        ]
        ref = self.members[0].values[0]
        self._minus_one = torch.full((1, 1, 1), -1.0, dtype=ref.dtype, device=ref.device)
        self._spaces: dict[int, _Workspace] = {}

    def __len__(self) -> int:
        return len(self.members)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[K, batch, classes]`` logits of input rows ``x`` (columns :attr:`pixels`)."""
        a = x.t().contiguous()
        for i, layer in enumerate(self.layers):
            a = layer.forward(a)
            if i < len(self.layers) - 1:
                a.clamp_min_(0)
        return a.view(len(self.members), self.classes, -1).transpose(1, 2).contiguous()

    @torch.no_grad()
    def step(self, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor) -> None:
        """One SGD step on the rows ``idx`` of ``x_all`` (columns :attr:`pixels`) and labels ``y_all``."""
        batch, k = idx.shape[0], len(self.members)
        ws = self._spaces.get(batch)
        if ws is None:
            ws = self._spaces[batch] = _Workspace(len(self.pixels), self.layers, batch, self._minus_one)
        y = torch.index_select(y_all, 0, idx, out=ws.y)
        a = ws.x_t.copy_(torch.index_select(x_all, 0, idx, out=ws.x).t())
        inputs = [a]
        for i, layer in enumerate(self.layers):
            a = layer.forward(a, out=ws.acts[i])
            if i < len(self.layers) - 1:
                a.clamp_min_(0)  # ReLU in place: its output also marks where the unit was active
                inputs.append(a)
        g = torch.softmax(a.view(k, self.classes, batch), dim=1)
        g.scatter_add_(1, y.view(1, 1, batch).expand(k, 1, batch), self._minus_one.expand(k, 1, batch))
        g = g.div_(batch).view(k * self.classes, batch)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            g_in = layer.input_grad(g, out=ws.grads[i - 1]) if i > 0 else None
            layer.update(g, inputs[i], self.lr, ws.bias_grads[i])
            if g_in is not None:
                g = _relu_backward(g_in, inputs[i], 0.0, grad_input=g_in)

    def current(self, k: int) -> CompactMember:
        """Member k as trained so far (copies of its values)."""
        parts = [layer.member(k) for layer in self.layers]
        return self.members[k].with_values([p[0] for p in parts], [p[1] for p in parts])

    def select(self, keep: torch.Tensor) -> CompactStep:
        """A step for the members ``keep`` (bool per member) as trained so far, with the same kernels."""
        rows = torch.nonzero(keep.cpu()).squeeze(1).tolist()
        return CompactStep([self.current(k) for k in rows], self.kinds, self.lr)
