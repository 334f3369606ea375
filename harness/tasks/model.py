"""The small language model MQAR trains: embeddings, blocks around a variant's mixer, a head.

    x = E[tokens]                                          (B, N, d)
    per block:  h = conv_causal(norm(x))                   short depthwise convolution, kernel 3
                x = x + mixer(h)                           the variant (`VariantMixer`)
                x = x + W₂ gelu(W₁ norm(x))                MLP, 2·d wide
    logits = W_out norm(x)                                 (B, N, vocab)

The short convolution is Zoology's and Mamba's: it lets a token see the one
before it without the mixer, so what the task measures is the mixer's recall
over the sequence, not its ability to find the previous position. There is
no positional embedding. Initialisation comes from the case's seed; the
embeddings are drawn from N(0, 0.02²), as GPT-2's: torch's default N(0, 1)
swamps the residual stream, and then one seed in three had not left MQAR's
loss plateau after 600 steps (recall 0.11 against 0.99), where with 0.02
every seed leaves it within 150 steps.
"""

from __future__ import annotations

import torch

from attnbench.core.case import Case
from attnbench.core.variant import Variant
from attnbench.tasks.mixer import VariantMixer

CONV_KERNEL = 3
EMBEDDING_STD = 0.02


class ShortConv(torch.nn.Module):
    """Causal depthwise convolution over the sequence: (B, N, d) -> (B, N, d)."""

    def __init__(self, width: int, kernel: int = CONV_KERNEL) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(width, width, kernel, groups=width, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq_len = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :seq_len].transpose(1, 2)


class Block(torch.nn.Module):
    def __init__(self, variant: Variant, case: Case, d_model: int, layer: int) -> None:
        super().__init__()
        self.mix_norm = torch.nn.LayerNorm(d_model)
        self.conv = ShortConv(d_model)
        self.mixer = VariantMixer(variant, case, d_model, layer)
        self.mlp_norm = torch.nn.LayerNorm(d_model)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d_model, 2 * d_model), torch.nn.GELU(),
                                       torch.nn.Linear(2 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.conv(self.mix_norm(x)))
        return x + self.mlp(self.mlp_norm(x))


class RecallModel(torch.nn.Module):
    """tokens (B, N) -> logits (B, N, vocab), with `layers` blocks whose mixer is `variant` on `case`."""

    def __init__(self, variant: Variant, case: Case, vocab: int, layers: int) -> None:
        super().__init__()
        d_model = case.heads * case.head_dim
        self.embed = torch.nn.Embedding(vocab, d_model)
        torch.nn.init.normal_(self.embed.weight, std=EMBEDDING_STD)
        self.blocks = torch.nn.ModuleList(Block(variant, case, d_model, layer) for layer in range(layers))
        self.norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, N, vocab); with a boolean `positions` (B, N), only those rows' logits, (P, vocab)."""
        x = self.embed(tokens)                                                        # (B, N, d)
        for block in self.blocks:
            x = block(x)
        if positions is not None:
            x = x[positions]                                                          # (P, d)
        return self.head(self.norm(x))                                                # (B, N, vocab) or (P, vocab)

    def bind(self) -> None:
        for block in self.blocks:
            block.mixer.bind()

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
