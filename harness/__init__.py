"""attnbench's public plugin API: everything a variant needs, imported as ``from harness import ...``.

This is the stable surface. Built-in variants and third-party plugins import
only these names; the subpackages behind them (`harness.core`,
`harness.attention`, `harness.measure`, ...) may move between versions.

- the contract: `Variant`, `AttentionInputs`, `Case`, `Knob`, `seeded_weight`,
  `kv_state_size` (the keys and values a sequence keeps: a `Variant.state_size`);
- accuracy bounds: `Tolerance`, `DEFAULT_TOLERANCES` (a variant's `tolerances` per dtype);
- dtypes: `DTYPES`, `torch_dtype`;
- references and FLOPs: `softmax_attention`, `attention_flops`,
  `causal_visible_pairs`, `ExactSoftmaxKernel`;
- masks: `causal_mask`, `band_mask` (boolean matrices), `causal_mask_mod`,
  `band_mask_mod` (the same predicates as Flex ``mask_mod``s), `mask_matrix`,
  `query_positions`, `visible_pairs`, and a case's whole mask (causal and its `mask` axis):
  `case_mask_mod`, `case_mask_matrix`, `case_visible_pairs`, `case_window`;
- score mods (the `score_mod` axis): `case_score_mod` (a Flex ``score_mod``),
  `apply_score_mod`, `score_bias` (ALiBi as an SDPA float mask), `alibi_slopes`, `case_softcap`;
- captured inputs: `capture_attention` (record the q, k, v a model passes to
  SDPA during one forward, into safetensors files), `CapturedCall`,
  `read_file_shapes`, `load_file_inputs` (the ``file:PATH`` inputs of a case);
- errors: `AttnbenchError`.

Names load lazily, so ``import harness.store`` or ``import harness.report``
never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.core.lazy import lazy_attributes

_PUBLIC = {
    "Variant": "harness.core.variant",
    "AttentionInputs": "harness.core.variant",
    "seeded_weight": "harness.core.variant",
    "kv_state_size": "harness.core.variant",
    "Case": "harness.core.case",
    "DTYPES": "harness.core.case",
    "Knob": "harness.core.knobs",
    "Tolerance": "harness.core.tolerance",
    "DEFAULT_TOLERANCES": "harness.core.tolerance",
    "AttnbenchError": "harness.core.errors",
    "torch_dtype": "harness.attention.tensors",
    "softmax_attention": "harness.attention.reference",
    "ExactSoftmaxKernel": "harness.attention.reference",
    "attention_flops": "harness.attention.flops",
    "causal_visible_pairs": "harness.attention.flops",
    "causal_mask": "harness.attention.masks",
    "band_mask": "harness.attention.masks",
    "causal_mask_mod": "harness.attention.masks",
    "band_mask_mod": "harness.attention.masks",
    "mask_matrix": "harness.attention.masks",
    "query_positions": "harness.attention.masks",
    "visible_pairs": "harness.attention.masks",
    "case_mask_mod": "harness.attention.masks",
    "case_mask_matrix": "harness.attention.masks",
    "case_visible_pairs": "harness.attention.masks",
    "case_window": "harness.attention.masks",
    "case_score_mod": "harness.attention.score_mods",
    "apply_score_mod": "harness.attention.score_mods",
    "score_bias": "harness.attention.score_mods",
    "alibi_slopes": "harness.attention.score_mods",
    "case_softcap": "harness.attention.score_mods",
    "capture_attention": "harness.measure.capture",
    "CapturedCall": "harness.measure.capture",
    "read_file_shapes": "harness.measure.input_files",
    "load_file_inputs": "harness.measure.input_files",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_attributes(globals(), _PUBLIC)


if TYPE_CHECKING:  # for type checkers and editors; at run time names load in __getattr__
    from harness.attention.flops import attention_flops, causal_visible_pairs  # noqa: F401
    from harness.attention.masks import (  # noqa: F401
        band_mask,
        band_mask_mod,
        case_mask_matrix,
        case_mask_mod,
        case_visible_pairs,
        case_window,
        causal_mask,
        causal_mask_mod,
        mask_matrix,
        query_positions,
        visible_pairs,
    )
    from harness.attention.reference import ExactSoftmaxKernel, softmax_attention  # noqa: F401
    from harness.attention.score_mods import (  # noqa: F401
        alibi_slopes,
        apply_score_mod,
        case_score_mod,
        case_softcap,
        score_bias,
    )
    from harness.attention.tensors import torch_dtype  # noqa: F401
    from harness.core.case import DTYPES, Case  # noqa: F401
    from harness.core.errors import AttnbenchError  # noqa: F401
    from harness.core.knobs import Knob  # noqa: F401
    from harness.core.tolerance import DEFAULT_TOLERANCES, Tolerance  # noqa: F401
    from harness.core.variant import AttentionInputs, Variant, kv_state_size, seeded_weight  # noqa: F401
    from harness.measure.capture import CapturedCall, capture_attention  # noqa: F401
    from harness.measure.input_files import load_file_inputs, read_file_shapes  # noqa: F401
