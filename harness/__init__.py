"""attnbench's public plugin API: everything a variant needs, imported as ``from attnbench import ...``.

This is the stable surface. Built-in variants and third-party plugins import
only these names; the subpackages behind them (`attnbench.core`,
`attnbench.attention`, `attnbench.measure`, ...) may move between versions.

- the contract: `Variant`, `AttentionInputs`, `Case`, `Knob`, `seeded_weight`,
  `LearnedWeight` and its initialisers `normal`, `uniform`, `log_uniform`,
  `constant` (weights a variant learns: seeded in kernel cells, trained in
  quality cells),
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
- attention sinks (the `sinks` axis): `case_sinks` (a case's per-head sink logits, or None),
  `rescale_for_sinks` (a plain kernel's output and row log-sum-exp turned into the output with sinks);
- ragged batches (the `lengths` and `layout` axes): `is_ragged`, `ragged_batch` (a case's
  `RaggedBatch`: lengths, offsets, pair counts), `ragged_execution` (a `Variant.execution` text),
  `pack`, `packed_inputs`, `padded_allowed`, `document_mask_mod`, `per_sequence`;
- paged KV caches (the `page_size` axis): `paged_cache` (a case's page pools and block table),
  `gather_pages` (the logical cache read back through the table), `page_owner_and_position`
  (each physical page's sequence and first position, for a mask over the pool), `kv_reader`
  (a forward's keys and values: the contiguous ones, or the pages gathered);
- captured inputs: `capture_attention` (record the q, k, v a model passes to
  SDPA during one forward, into safetensors files), `CapturedCall`,
  `read_file_shapes`, `load_file_inputs` (the ``file:PATH`` inputs of a case);
- native kernels: `native_library` (a C source beside a variant, built once per machine into
  attnbench's cache and loaded with ctypes), `NativeLibrary` (the library, or why there is none;
  `kernel(name, dtype)` its function for a precision), `c_arguments` (tensors and ints as ctypes
  arguments);
- errors: `AttnbenchError`.

Names load lazily, so ``import attnbench.store`` or ``import attnbench.report``
never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attnbench.core.lazy import lazy_attributes

__getattr__, __dir__, __all__ = lazy_attributes(globals(), {
    "attnbench.core.variant": ("Variant", "AttentionInputs", "seeded_weight", "kv_state_size"),
    "attnbench.core.learned": ("LearnedWeight", "normal", "uniform", "log_uniform", "constant"),
    "attnbench.core.case": ("Case", "DTYPES"),
    "attnbench.core.knobs": ("Knob",),
    "attnbench.core.tolerance": ("Tolerance", "DEFAULT_TOLERANCES"),
    "attnbench.core.errors": ("AttnbenchError",),
    "attnbench.attention.tensors": ("torch_dtype",),
    "attnbench.attention.reference": ("softmax_attention", "ExactSoftmaxKernel"),
    "attnbench.attention.flops": ("attention_flops", "causal_visible_pairs"),
    "attnbench.attention.masks": ("causal_mask", "band_mask", "causal_mask_mod", "band_mask_mod",
                                  "mask_matrix", "query_positions", "visible_pairs", "case_mask_mod",
                                  "case_mask_matrix", "case_visible_pairs", "case_window"),
    "attnbench.kinds.score_mods": ("case_score_mod", "apply_score_mod", "score_bias", "alibi_slopes",
                                   "case_softcap"),
    "attnbench.attention.sinks": ("case_sinks", "rescale_for_sinks"),
    "attnbench.kinds.lengths.batch": ("is_ragged", "ragged_batch", "ragged_execution", "RaggedBatch"),
    "attnbench.attention.ragged": ("pack", "packed_inputs", "padded_allowed", "document_mask_mod",
                                   "per_sequence"),
    "attnbench.attention.paged": ("paged_cache", "gather_pages", "page_owner_and_position", "kv_reader"),
    "attnbench.measure.capture": ("capture_attention", "CapturedCall"),
    "attnbench.measure.input_files": ("read_file_shapes", "load_file_inputs"),
    "attnbench.measure.native": ("native_library", "NativeLibrary", "c_arguments"),
})


if TYPE_CHECKING:  # for type checkers and editors; at run time names load in __getattr__
    from attnbench.attention.flops import attention_flops, causal_visible_pairs  # noqa: F401
    from attnbench.attention.masks import (  # noqa: F401
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
    from attnbench.attention.paged import (  # noqa: F401
        gather_pages,
        kv_reader,
        page_owner_and_position,
        paged_cache,
    )
    from attnbench.attention.ragged import (  # noqa: F401
        document_mask_mod,
        pack,
        packed_inputs,
        padded_allowed,
        per_sequence,
    )
    from attnbench.attention.reference import ExactSoftmaxKernel, softmax_attention  # noqa: F401
    from attnbench.attention.sinks import case_sinks, rescale_for_sinks  # noqa: F401
    from attnbench.attention.tensors import torch_dtype  # noqa: F401
    from attnbench.core.case import DTYPES, Case  # noqa: F401
    from attnbench.core.errors import AttnbenchError  # noqa: F401
    from attnbench.core.knobs import Knob  # noqa: F401
    from attnbench.core.learned import LearnedWeight, constant, log_uniform, normal, uniform  # noqa: F401
    from attnbench.core.tolerance import DEFAULT_TOLERANCES, Tolerance  # noqa: F401
    from attnbench.core.variant import AttentionInputs, Variant, kv_state_size, seeded_weight  # noqa: F401
    from attnbench.kinds.lengths.batch import RaggedBatch, is_ragged, ragged_batch, ragged_execution  # noqa: F401
    from attnbench.kinds.score_mods import (  # noqa: F401
        alibi_slopes,
        apply_score_mod,
        case_score_mod,
        case_softcap,
        score_bias,
    )
    from attnbench.measure.capture import CapturedCall, capture_attention  # noqa: F401
    from attnbench.measure.input_files import load_file_inputs, read_file_shapes  # noqa: F401
    from attnbench.measure.native import NativeLibrary, c_arguments, native_library  # noqa: F401
