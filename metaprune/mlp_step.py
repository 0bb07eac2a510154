"""The hand-written training step of an MLP population: batched-matmul forward and backward.

Equal to autograd on the same forward (a test compares against a plain ``nn.Module`` + ``torch.optim``
loop) but without graph bookkeeping, and with every intermediate in a workspace that lives as long as
the population's shape. Both matter on a CPU: a LeNet-300-100 step is ~70 MFLOP, so per-op overhead
and the page faults of freshly allocated temporaries would otherwise cost as much as the GEMMs.

How a step ends depends on the optimiser and the mask mode:

- plain SGD (no momentum, no weight decay: the thesis's optimiser), pruned weights held at zero: the
  update is folded into the gradient GEMMs, ``W ← W − lr·GᵀH`` in one ``addmm_``, so weight gradients are
  never materialised, and pruned weights are zeroed again right after (``W ← W ⊙ m``). That is exactly
  masked-gradient SGD: a kept weight gets ``W − lr·g``, a pruned one stays 0, and nothing reads the
  transient value in between.
- plain SGD with masks in the forward pass: masked gradients, then ``p ← p − lr·g`` per tensor (what
  ``torch.optim.SGD`` does) without the optimiser's per-step overhead.
- any other optimiser: masked gradients in persistent ``.grad`` buffers for ``torch.optim``.

Results are reproducible for a given thread count; BLAS splits reductions differently across thread
counts, so the last bits can differ between, say, 1 and 2 threads.
"""

from __future__ import annotations

import torch

_relu_backward = torch.ops.aten.threshold_backward.grad_input


class _Workspace:
    """Every intermediate of one step for a population of ``k`` members and a batch of ``b``."""

    def __init__(self, weights: list[torch.Tensor], b: int, mask_in_forward: bool) -> None:
        k, out0, in0 = weights[0].shape
        opts = {"dtype": weights[0].dtype, "device": weights[0].device}
        self.x = torch.empty(b, in0, **opts)
        self.y = torch.empty(b, dtype=torch.long, device=opts["device"])
        # Layer 0 sees one input for every member: its output is [b, k·out0] from one GEMM.
        self.h = [torch.empty(b, k * out0, **opts)] + [torch.empty(k, b, w.shape[1], **opts) for w in weights[1:]]
        self.gx = [torch.empty(k, b, w.shape[2], **opts) for w in weights[1:]]
        # Layer 0's weight gradient is one GEMM too, over the gradient laid out [b, k·out0].
        self.g0_flat = torch.empty(b, k, out0, **opts) if k > 1 else None
        self.minus_one = torch.full((1, 1, 1), -1.0, **opts).expand(k, b, 1)
        self.bias_grad = [torch.empty(k, w.shape[1], **opts) for w in weights]
        # W ⊙ m when masks act in the forward pass
        self.masked = [torch.empty_like(w) for w in weights] if mask_in_forward else []


class MLPStep:
    """One optimiser step's forward and backward for stacked MLP parameters ``layers.{i}.weight/bias``.

    ``params`` hold ``[K, out, in]`` weights and ``[K, out]`` biases; ``masks`` are ``[K, out, in]``
    0/1 tensors of the layers that are pruned. ``mask_in_forward``: the forward uses ``W ⊙ m`` (pruned
    entries keep their value, without influence); otherwise pruned weights are exactly zero.
    """

    def __init__(self, n_layers: int, masks: dict[str, torch.Tensor], mask_in_forward: bool, sgd_lr: float | None):
        self.weight_names = [f"layers.{i}.weight" for i in range(n_layers)]
        self.bias_names = [f"layers.{i}.bias" for i in range(n_layers)]
        # A layer whose masks keep every weight needs no masking at all.
        self.masks = {name: m for name, m in masks.items() if not bool(m.all())}
        self.mask_in_forward = mask_in_forward
        self.sgd_lr = sgd_lr
        self.fused = sgd_lr is not None and not mask_in_forward
        self._spaces: dict[tuple[int, int], _Workspace] = {}

    @property
    def applies_update(self) -> bool:
        """True when the step also applies the SGD update (no optimiser call needed)."""
        return self.sgd_lr is not None

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members ``keep`` (a bool mask over the population)."""
        self.masks = {name: m[keep].clone() for name, m in self.masks.items()}
        self._spaces.clear()

    @torch.no_grad()
    def __call__(self, params: dict[str, torch.Tensor], x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor):
        raw = [params[n] for n in self.weight_names]
        biases = [params[n] for n in self.bias_names]
        b = idx.shape[0]
        k, out0, in0 = raw[0].shape
        ws = self._spaces.get((k, b))
        if ws is None:
            ws = self._spaces[(k, b)] = _Workspace(raw, b, self.mask_in_forward)
        x = torch.index_select(x_all.flatten(1), 0, idx, out=ws.x)
        y = torch.index_select(y_all, 0, idx, out=ws.y)
        weights = raw
        if self.mask_in_forward:
            weights = [
                torch.mul(w, self.masks[n], out=ws.masked[i]) if n in self.masks else w
                for i, (w, n) in enumerate(zip(raw, self.weight_names, strict=True))
            ]

        h = torch.addmm(biases[0].reshape(-1), x, weights[0].reshape(k * out0, in0).t(), out=ws.h[0])
        h = h.view(b, k, out0).transpose(0, 1)
        hidden = []
        for i in range(1, len(weights)):
            h.clamp_min_(0)  # ReLU in place: its output also tells the backward where the unit was active
            hidden.append(h)
            h = torch.baddbmm(biases[i].unsqueeze(1), h, weights[i].transpose(1, 2), out=ws.h[i])

        # d(mean cross-entropy)/d(logits) = (softmax − onehot) / batch, per member.
        g = torch.softmax(h, dim=-1)
        g.scatter_add_(2, y.view(1, b, 1).expand(k, b, 1), ws.minus_one)
        g.div_(b)
        for i in range(len(weights) - 1, 0, -1):
            h_prev = hidden[i - 1]
            g_in = torch.bmm(g, weights[i], out=ws.gx[i - 1])  # before this layer's weights change
            self._weight_step(raw[i], self.weight_names[i], g.transpose(1, 2), h_prev, batched=True)
            self._bias_step(biases[i], g, ws.bias_grad[i])
            g = _relu_backward(g_in, h_prev, 0.0, grad_input=g_in)
        flat = g.view(b, out0) if ws.g0_flat is None else ws.g0_flat.copy_(g.transpose(0, 1)).view(b, k * out0)
        self._weight_step(raw[0], self.weight_names[0], flat.t(), x, batched=False)
        self._bias_step(biases[0], g, ws.bias_grad[0])
        if self.sgd_lr is not None and not self.fused:
            for p in raw + biases:
                p.add_(p.grad, alpha=-self.sgd_lr)  # torch.optim.SGD's update, without its per-step overhead

    def _weight_step(self, w: torch.Tensor, name: str, a: torch.Tensor, b: torch.Tensor, batched: bool) -> None:
        """``a @ b`` is the weight gradient: fused, ``W ← (W − lr·(a @ b)) ⊙ m``; else ``W.grad ← (a @ b) ⊙ m``."""
        mask = self.masks.get(name)
        if self.fused:
            if batched:
                w.baddbmm_(a, b, alpha=-self.sgd_lr)
            else:
                w.view(-1, w.shape[-1]).addmm_(a, b, alpha=-self.sgd_lr)
            if mask is not None:
                w.mul_(mask)
            return
        grad = self._grad_buffer(w)
        if batched:
            torch.bmm(a, b, out=grad)
        else:
            torch.mm(a, b, out=grad.view(-1, w.shape[-1]))
        if mask is not None:
            grad.mul_(mask)

    def _bias_step(self, bias: torch.Tensor, g: torch.Tensor, buffer: torch.Tensor) -> None:
        if self.fused:
            bias.add_(torch.sum(g, 1, out=buffer), alpha=-self.sgd_lr)
        else:
            torch.sum(g, 1, out=self._grad_buffer(bias))

    @staticmethod
    def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
        if p.grad is None:
            p.grad = torch.empty_like(p)
        return p.grad
