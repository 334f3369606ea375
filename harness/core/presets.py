"""Model presets: the attention shapes of named language models, for suites and the CLI.

A preset fills a case's `heads`, `kv_heads`, `head_dim`, `v_head_dim`,
`causal` and `mask` from one model's published configuration, so a suite can
say ``preset = "llama3-8b"`` instead of four numbers it might get wrong.
Every preset is the attention of one layer as one device sees it (the
``-tp8`` preset divides the heads between 8 tensor-parallel devices). Every
model here is a causal decoder, so each preset sets ``causal = true``.

Sliding windows are counted two ways. attnbench's ``sliding_window:W`` (as
flash-attn's ``window_size=(W, W)`` and attention-gym's ``sliding_window``)
lets a query see the W keys before it and itself: W + 1 keys under a causal
mask. A model's config counts the keys a query sees, itself included: Hugging
Face's Mistral masks ``kv_idx > q_idx - sliding_window`` (``sliding_window``
keys), and vLLM passes flash-attn ``window_size=(sliding_window - 1, 0)``. So
each preset states its model's window as the model counts it (`Preset.window`,
None for full attention), and its mask is derived from that:
``sliding_window:{window - 1}``.

Pure Python (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attnbench.core.errors import did_you_mean


@dataclass(frozen=True)
class Preset:
    """One model's attention shape, and where the numbers come from.

    window: the keys one query sees under the model's sliding window, itself
    included, as the model's config counts them (Hugging Face's
    ``sliding_window``); None when the model attends to every earlier key.
    mask: the case's `mask` axis for it, derived from `window`
    (``sliding_window:{window - 1}``, or ``none``).
    """

    name: str
    heads: int
    kv_heads: int
    head_dim: int
    v_head_dim: int
    window: int | None
    causal: bool
    source: str
    mask: str = field(init=False)

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError(f"preset {self.name}: window must be at least 1 key, got {self.window}")
        object.__setattr__(self, "mask", "none" if self.window is None else f"sliding_window:{self.window - 1}")

    def fields(self) -> dict[str, object]:
        """The case fields this preset fills."""
        return {"heads": self.heads, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "v_head_dim": self.v_head_dim, "mask": self.mask, "causal": self.causal}

    @property
    def shape_text(self) -> str:
        """'32 q / 8 kv heads, d 128' (and 'dv 128', the mask) as `attnbench list --presets` prints it."""
        text = f"{self.heads} q / {self.kv_heads} kv heads, d {self.head_dim}"
        if self.v_head_dim != self.head_dim:
            text += f", dv {self.v_head_dim}"
        text += ", causal" if self.causal else ""
        if self.window is None:
            return text
        return text + f", {self.mask} (the model's window of {self.window} keys, the query's own included)"


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("llama3-8b", 32, 8, 128, 128, None, True,
           "Llama 3 8B: 32 attention heads, 8 key/value heads, hidden size 4096, no sliding window (Meta's model "
           "card and config.json; Grattafiori et al., 'The Llama 3 Herd of Models', 2024, table 3)"),
    Preset("llama3-70b-tp8", 8, 1, 128, 128, None, True,
           "Llama 3 70B (64 heads, 8 key/value heads, d 128; same sources) split over 8 tensor-parallel "
           "devices: 8 query heads and 1 key/value head per device"),
    Preset("qwen2.5-7b", 28, 4, 128, 128, None, True,
           "Qwen2.5 7B: 28 attention heads, 4 key/value heads, hidden size 3584, full attention (config.json: "
           "use_sliding_window false) (Qwen team, 'Qwen2.5 Technical Report', 2024, table 1)"),
    Preset("mistral-7b", 32, 8, 128, 128, 4096, True,
           "Mistral 7B: 32 heads, 8 key/value heads, d 128, sliding window 4096 (Jiang et al., 'Mistral 7B', "
           "2023, table 1; config.json of v0.1: sliding_window 4096): a query sees itself and the 4095 keys "
           "before it, as Hugging Face's MistralAttention masks them (kv_idx > q_idx - 4096)"),
    Preset("deepseek-v3-mla", 128, 128, 192, 128, None, True,
           "DeepSeek-V3's multi-head latent attention as prefill computes it: 128 heads, query/key head dim "
           "192 (128 + 64 rotary), value head dim 128 (DeepSeek-AI, 'DeepSeek-V3 Technical Report', 2024, "
           "section 4.2, and config.json: qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128)"),
)}


def get_preset(name: str) -> Preset:
    """The preset called `name`; ValueError listing the presets when there is none."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}{did_you_mean(key, PRESETS)}; presets: {', '.join(PRESETS)} "
                         "(attnbench list --presets)")
    return PRESETS[key]
