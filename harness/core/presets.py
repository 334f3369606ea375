"""Model presets: the attention shapes of named language models, for suites and the CLI.

A preset fills a case's `heads`, `kv_heads`, `head_dim`, `v_head_dim`,
`causal` and `mask` from one model's published configuration, so a suite can
say ``preset = "llama3-8b"`` instead of four numbers it might get wrong.
Every preset is the attention of one layer as one device sees it (the
``-tp8`` preset divides the heads between 8 tensor-parallel devices). Every
model here is a causal decoder, so each preset sets ``causal = true``.

Pure Python (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import did_you_mean


@dataclass(frozen=True)
class Preset:
    """One model's attention shape, and where the numbers come from."""

    name: str
    heads: int
    kv_heads: int
    head_dim: int
    v_head_dim: int
    mask: str
    causal: bool
    source: str

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
        return text + ("" if self.mask == "none" else f", {self.mask}")


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("llama3-8b", 32, 8, 128, 128, "none", True,
           "Llama 3 8B: 32 attention heads, 8 key/value heads, hidden size 4096 (Meta's model card and "
           "config.json; Grattafiori et al., 'The Llama 3 Herd of Models', 2024, table 3)"),
    Preset("llama3-70b-tp8", 8, 1, 128, 128, "none", True,
           "Llama 3 70B (64 heads, 8 key/value heads, d 128; same sources) split over 8 tensor-parallel "
           "devices: 8 query heads and 1 key/value head per device"),
    Preset("qwen2.5-7b", 28, 4, 128, 128, "none", True,
           "Qwen2.5 7B: 28 attention heads, 4 key/value heads, hidden size 3584 (Qwen team, "
           "'Qwen2.5 Technical Report', 2024, table 1, and the model's config.json)"),
    Preset("mistral-7b", 32, 8, 128, 128, "sliding_window:4096", True,
           "Mistral 7B: 32 heads, 8 key/value heads, d 128, sliding window 4096 (Jiang et al., "
           "'Mistral 7B', 2023, table 1)"),
    Preset("deepseek-v3-mla", 128, 128, 192, 128, "none", True,
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
