"""A registered variant as the sequence mixer of a model, through its public `prepare` and forward.

`prepare(case, inputs)` returns a zero-argument forward bound to the tensors it
was given, built once outside any loop, exactly as the timing harness uses it.
`VariantMixer` keeps those tensors as leaf buffers: each call copies the
layer's q, k and v into them, runs the variant's forward, and in the backward
takes the gradients of the output with respect to the buffers (the harness's
own backward), which autograd passes on to the projections that made q, k, v.
The variant's learned weights (`Variant.learned_weights`) are parameters of
the mixer, started from their seeded values and passed to `prepare` as
`AttentionInputs.weights`, so the same backward also gives their gradients.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from attnbench.core.case import Case
from attnbench.core.errors import AttnbenchError
from attnbench.core.learned import check_declared, initial_weights
from attnbench.core.variant import AttentionInputs, Variant


class MixerError(AttnbenchError):
    """A variant cannot serve as a trained mixer (its forward ignores new inputs, or it has no gradient)."""


class _BoundForward:
    """A variant's forward prepared once on leaf buffers of the case's shapes."""

    def __init__(self, variant: Variant, case: Case, weights: dict[str, torch.Tensor]) -> None:
        shapes = ((case.batch, case.heads, case.seq_len, case.head_dim),
                  (case.batch, case.kv_heads, case.kv_len, case.head_dim),
                  (case.batch, case.kv_heads, case.kv_len, case.v_head_dim))
        generator = torch.Generator().manual_seed(case.seed + 7919)
        self.buffers = tuple(torch.randn(shape, generator=generator).to(case.device).requires_grad_(True)
                             for shape in shapes)
        self.variant, self.case, self.weights = variant, case, weights
        with torch.enable_grad():
            self.forward = variant.prepare(case, AttentionInputs(*self.buffers, weights=weights))
        self._check_reads_inputs(generator)

    def _check_reads_inputs(self, generator: torch.Generator) -> None:
        """The bound forward on refilled buffers must equal a forward prepared on those values."""
        fresh = tuple(torch.randn(b.shape, generator=generator).to(b.device) for b in self.buffers)
        with torch.no_grad():
            for buffer, value in zip(self.buffers, fresh, strict=True):
                buffer.copy_(value)
        with torch.enable_grad():
            bound = self.forward().detach()
            again = self.variant.prepare(self.case, AttentionInputs(*(t.clone().requires_grad_(True) for t in fresh),
                                                                    weights=self.weights))()
        if not torch.allclose(bound, again.detach(), rtol=1e-4, atol=1e-5):
            raise MixerError(f"variant {self.variant.name!r}: its prepared forward does not read its inputs at call "
                             "time (refilled inputs gave another output than a fresh prepare); a variant must "
                             "build only what the case fixes in prepare")

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for buffer, value in zip(self.buffers, (q, k, v), strict=True):
                buffer.copy_(value)
        with torch.enable_grad():
            return self.forward()


class _ThroughVariant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, bound: _BoundForward, q, k, v, *weights):
        out = bound(q, k, v)
        ctx.bound, ctx.out = bound, out
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out):
        bound = ctx.bound
        leaves = (*bound.buffers, *bound.weights.values())
        grads = torch.autograd.grad(ctx.out, leaves, grad_out, allow_unused=True)
        ctx.out = None
        return (None, *(torch.zeros_like(b) if g is None else g for g, b in zip(grads, leaves, strict=True)))


class VariantMixer(torch.nn.Module):
    """x (B, N, d_model) -> (B, N, d_model): project q, k, v, run the variant on them, project back.

    A variant that declares `output_gate` or `output_norm` has its output
    gated, o ⊙ silu(x W_z), then RMS-normalised per head before the output
    projection, as its layer does around its core.

    The mixer's case is `case` (batch, heads, seq_len, head_dim, kv_heads,
    v_head_dim, causal, the variant's knobs) with its seed offset by `layer`,
    so every layer draws its own fixed weights (random features) and the
    starting values of its learned weights from the variant. `learned` holds
    those learned weights as parameters (one per declared name).
    """

    def __init__(self, variant: Variant, case: Case, d_model: int, layer: int) -> None:
        super().__init__()
        self.case = replace(case, seed=case.seed * 101 + layer, mode="fwd_bwd")
        self.variant = variant
        heads, kv_heads, head_dim, v_dim = case.heads, case.kv_heads, case.head_dim, case.v_head_dim
        self.q_proj = torch.nn.Linear(d_model, heads * head_dim, bias=False)
        self.k_proj = torch.nn.Linear(d_model, kv_heads * head_dim, bias=False)
        self.v_proj = torch.nn.Linear(d_model, kv_heads * v_dim, bias=False)
        self.out_proj = torch.nn.Linear(heads * v_dim, d_model, bias=False)
        self.gate_proj = torch.nn.Linear(d_model, heads * v_dim, bias=False) if variant.output_gate else None
        self.out_norm = torch.nn.RMSNorm(v_dim, eps=1e-6) if variant.output_norm else None
        declared = variant.learned_weights(self.case)
        check_declared(variant.name, declared)
        self.learned = torch.nn.ParameterDict({name: torch.nn.Parameter(value) for name, value in
                                               initial_weights(variant.name, self.case, declared,
                                                               torch.float32).items()})
        self.no_decay = tuple(name for name, weight in declared.items() if not weight.decay)
        self._bound: _BoundForward | None = None

    def bind(self) -> None:
        """Prepare the variant once on this layer's case (outside the training loop)."""
        if self._bound is None:
            self._bound = _BoundForward(self.variant, self.case, dict(self.learned))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.bind()
        batch, seq_len, _ = x.shape
        case = self.case

        def heads_of(t: torch.Tensor, heads: int) -> torch.Tensor:
            return t.view(batch, seq_len, heads, -1).transpose(1, 2)                 # (B, H, N, dh)

        q = heads_of(self.q_proj(x), case.heads)
        k = heads_of(self.k_proj(x), case.kv_heads)
        v = heads_of(self.v_proj(x), case.kv_heads)
        out = _ThroughVariant.apply(self._bound, q, k, v, *self.learned.values())    # (B, H, N, dv)
        if self.gate_proj is not None:
            out = out * torch.nn.functional.silu(heads_of(self.gate_proj(x), case.heads))   # o ⊙ silu(x W_z)
        if self.out_norm is not None:
            out = self.out_norm(out)                                                 # per head, over dv
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq_len, -1))         # (B, N, d_model)
