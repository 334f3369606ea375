"""The variant contract: the public API a plugin implements.

A variant is an attention implementation (or a stand-in such as a state-space
scan) that the harness can run on a `Case`. Like an xformers operator it
*declares* what it supports and returns every reason it cannot run a case,
instead of failing at run time.

To add one, subclass `Variant`, fill in the class attributes, implement
`prepare`, `reference` and `flops` (and `memory_model` if you can), and
register the class under the entry point group ``attnbench.variants``::

    [project.entry-points."attnbench.variants"]
    my-attention = "my_package.module:MyAttention"

The entry point's name must equal the variant's `name`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from attnbench.core.case import DTYPES, Case
from attnbench.core.knobs import Knob, declare_knobs
from attnbench.core.learned import LearnedWeight, check_declared, given_weights, initial_weights
from attnbench.core.tolerance import DEFAULT_TOLERANCES, Tolerance, declare_tolerances

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class AttentionInputs:
    """The tensors a case runs on: q (B, H, N, d), k (B, Hkv, M, d) and v (B, Hkv, M, d_v).

    The reference receives the same tensors upcast to float64. `weights` is
    None in kernel cells; a quality cell passes the model's trained values of
    the variant's learned weights (name -> tensor), which `Variant.weights`
    then returns instead of the seeded ones.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    weights: Mapping[str, torch.Tensor] | None = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.q, self.k, self.v)


class Variant:
    """Base class of every attention variant.

    Class attributes describe the variant; override the methods below.

    name: stable short name, as `attnbench list` shows it (``naive``, ``sdpa-flash``).
    family: the family it belongs to (``naive``, ``flash``, ``performer``...).
    computes: the mathematical function it implements (``softmax_attention``...).
    approximates: the exact function it stands in for, if any.
    knobs: its tunable parameters, name -> `Knob` (type, default, bounds, doc);
        a suite may sweep them. This one declaration checks a case's values,
        a suite's ``[params]``, ``--param`` text and feeds ``attnbench list``.
    params: derived from `knobs`, read-only: each knob's default. (A plugin
        may still declare ``params = {"x": 1}`` instead of `knobs`: each plain
        default becomes a knob of its value's type, with no bounds.)
    devices, dtypes: where and in which precisions it can run.
    supports_causal, supports_backward, supports_cross: whether it handles a
        causal mask, a backward pass, and kv_len != seq_len.
    supports_gqa, supports_v_head_dim: whether it handles kv_heads < heads
        (grouped or multi-query heads) and v_head_dim != head_dim.
    supported_masks: the kinds of the `mask` axis it takes (``sliding_window``,
        ``document``, ``prefix_lm``); build them from `case_mask_mod(case)`.
    supported_score_mods: the kinds of the `score_mod` axis it takes (``alibi``,
        ``softcap``); build them from `case_score_mod(case)`.
    supports_sinks: whether it takes ``sinks = learned`` (one logit per head in
        every softmax denominator); read them with `case_sinks(case)`.
    supports_lengths: whether it takes a ragged batch (the `lengths` axis other
        than ``fixed``); `supported_layouts`: the `layout` values it takes
        (``padded``, ``packed``). Build them with `attnbench.attention.ragged`.
    output_gate, output_norm: what the layer adds around its core when it is
        a trained model's mixer (`attnbench.tasks`): a gate on its output,
        o ⊙ silu(x W_z) with W_z learned from the block's input, and an RMS
        normalisation of each head's output with a learned gain, before the
        output projection (Mamba-2's gated RMSNorm is both). A kernel cell
        times the core alone, without either.
    supports_paged_kv: whether it takes ``page_size > 0`` (k and v in a page
        pool behind a block table; forward only); build them with `paged_cache(case, k, v)`.
    requires: distributions it imports (``flash-attn``); a missing one is a reason.
    compiles: whether `prepare` runs torch.compile; the harness then imports
        torch.compile's stack once per worker before the setup clock starts,
        so the first such cell's ``setup_s`` holds its shape's cost only.
    min_cuda_capability: the oldest CUDA compute capability it runs on, e.g. (8, 0).
    reference_rows: whether `reference` can be evaluated on a subset of query
        rows (exact for functions where each output row depends only on its
        own query), which lets accuracy be checked at large seq_len.

    The sentences of the checks above are attributes too, so a subclass words
    its own (``device_reason = "flash-attn is a CUDA-only kernel"``) instead of
    editing the base class's list: `device_reason`, `dtype_reason` (templates
    that may use ``{device}``, ``{devices}``, ``{dtype}``, ``{dtypes}``),
    `causal_reason`, `backward_reason` and `cross_reason`.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    computes: ClassVar[str] = ""
    approximates: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    knobs: ClassVar[Mapping[str, Knob]] = MappingProxyType({})
    params: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[str, ...]] = DTYPES
    supports_causal: ClassVar[bool] = True
    supports_backward: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = True
    supports_gqa: ClassVar[bool] = False
    supports_v_head_dim: ClassVar[bool] = False
    supported_masks: ClassVar[tuple[str, ...]] = ()
    supported_score_mods: ClassVar[tuple[str, ...]] = ()
    supports_sinks: ClassVar[bool] = False
    supports_lengths: ClassVar[bool] = False
    supported_layouts: ClassVar[tuple[str, ...]] = ("padded",)
    output_gate: ClassVar[bool] = False
    output_norm: ClassVar[bool] = False
    supports_paged_kv: ClassVar[bool] = False
    reference_rows: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()
    compiles: ClassVar[bool] = False
    min_cuda_capability: ClassVar[tuple[int, int] | None] = None
    tolerances: ClassVar[Mapping[str, Tolerance]] = DEFAULT_TOLERANCES

    device_reason: ClassVar[str] = "runs on {devices} only, not on {device}"
    dtype_reason: ClassVar[str] = "supports dtypes {dtypes}, not {dtype}"
    causal_reason: ClassVar[str] = "has no causal form"
    backward_reason: ClassVar[str] = "has no backward pass (forward only)"
    cross_reason: ClassVar[str] = "needs kv_len == seq_len"
    gqa_reason: ClassVar[str] = "needs kv_heads == heads (no grouped or multi-query heads)"
    mask_reason: ClassVar[str] = "has no {kind} mask (masks it takes: {masks})"
    score_mod_reason: ClassVar[str] = "has no {kind} score mod (score mods it takes: {mods})"
    v_head_dim_reason: ClassVar[str] = "needs v_head_dim == head_dim"
    sinks_reason: ClassVar[str] = "has no attention sinks (sinks = learned); naive, sdpa-math and flex have them"
    lengths_reason: ClassVar[str] = ("takes no ragged batch (lengths other than fixed); naive, sdpa-math, sdpa-flash, "
                                     "flex and flash-tiled do")
    layout_reason: ClassVar[str] = "has no {layout} layout (layouts it takes: {layouts})"
    paged_kv_reason: ClassVar[str] = ("has no paged KV cache (page_size > 0); naive, sdpa-*, flash-decoding, flex and "
                                      "flash-attn have one, or set page_size = 0")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "knobs" in own and "params" in own:
            raise TypeError(f"{cls.__qualname__}: declare `knobs` (name -> Knob) only; `params` is derived from it")
        if "knobs" in own or "params" in own:
            cls.knobs = declare_knobs(own["knobs"] if "knobs" in own else own["params"], owner=cls.__qualname__)
            cls.params = MappingProxyType({name: knob.default for name, knob in cls.knobs.items()})
        if "tolerances" in own:
            cls.tolerances = declare_tolerances(own["tolerances"], super(cls, cls).tolerances, owner=cls.__qualname__)

    def unsupported_reasons(self, case: Case) -> list[str]:
        """Every reason this variant cannot run `case`; empty when it can.

        Subclasses extend the list (call ``super().unsupported_reasons(case)``
        and append); they never remove or reword a sentence already in it; the
        attributes above reword the base class's. Each reason is a sentence a
        user can act on.
        """
        reasons = [f"requires the package {pkg!r}, which is not installed (pip install {pkg})"
                   for pkg in self.requires if importlib.util.find_spec(pkg.replace("-", "_")) is None]
        if case.device not in self.devices:
            reasons.append(self._sentence(self.device_reason, case))
        elif case.device == "cuda":
            reasons += _cuda_reasons(self.min_cuda_capability)
        if case.dtype not in self.dtypes:
            reasons.append(self._sentence(self.dtype_reason, case))
        if case.causal and not self.supports_causal:
            reasons.append(self.causal_reason)
        if case.mode == "fwd_bwd" and not self.supports_backward:
            reasons.append(self.backward_reason)
        if case.kv_len != case.seq_len and not self.supports_cross:
            reasons.append(self.cross_reason)
        if getattr(case, "kv_heads", case.heads) != case.heads and not self.supports_gqa:
            reasons.append(self.gqa_reason)
        if getattr(case, "v_head_dim", case.head_dim) != case.head_dim and not self.supports_v_head_dim:
            reasons.append(self.v_head_dim_reason)
        kind = getattr(case, "mask", "none").partition(":")[0]
        if kind != "none" and kind not in self.supported_masks:
            reasons.append(self.mask_reason.format(kind=kind, masks=", ".join(self.supported_masks) or "none"))
        mod = getattr(case, "score_mod", "none").partition(":")[0]
        if mod != "none" and mod not in self.supported_score_mods:
            reasons.append(self.score_mod_reason.format(kind=mod, mods=", ".join(self.supported_score_mods) or "none"))
        if getattr(case, "sinks", "none") != "none" and not self.supports_sinks:
            reasons.append(self.sinks_reason)
        reasons += self._ragged_reasons(case)
        reasons += self._paged_reasons(case)
        unknown = sorted(set(case.params) - set(self.knobs))
        if unknown:
            reasons.append(f"has no knob {', '.join(unknown)} (knobs: {', '.join(self.knobs) or 'none'})")
        for name, knob in self.knobs.items():
            value = case.params.get(name, knob.default)
            if not knob.accepts(value):
                reasons.append(f"the knob {name} must be {knob.expected}, not {value!r}")
        return reasons

    def _ragged_reasons(self, case: Case) -> list[str]:
        """Why a ragged case (lengths other than fixed, or the packed layout) cannot run here."""
        lengths, layout = getattr(case, "lengths", "fixed"), getattr(case, "layout", "padded")
        if lengths == "fixed" and layout == "padded":
            return []
        reasons = []
        if lengths != "fixed" and not self.supports_lengths:
            reasons.append(self.lengths_reason)
        if layout not in self.supported_layouts:
            reasons.append(self.layout_reason.format(layout=layout, layouts=", ".join(self.supported_layouts)))
        if not reasons:
            if case.mask != "none" or case.score_mod != "none" or case.sinks != "none":
                reasons.append("a ragged batch takes the causal flag only: set mask, score_mod and sinks to none "
                               "(each sequence is its own document)")
            if case.mode == "fwd_bwd":
                reasons.append("ragged batches are measured forward only (mode = fwd): the backward would check "
                               "the padding rows' gradients too")
        return reasons

    def _paged_reasons(self, case: Case) -> list[str]:
        """Why a paged case (page_size > 0) cannot run here."""
        if not getattr(case, "page_size", 0):
            return []
        reasons = []
        if not self.supports_paged_kv:
            reasons.append(self.paged_kv_reason)
        elif case.mode == "fwd_bwd":
            reasons.append("a paged KV cache is read by decode steps, forward only: use mode = fwd, or page_size = 0")
        if getattr(case, "lengths", "fixed") != "fixed":
            reasons.append("a paged KV cache holds sequences of kv_len keys each; ragged lengths on pages are not "
                           "built: use lengths = fixed, or page_size = 0")
        return reasons

    def knob_values(self, case: Case, *names: str) -> Any:
        """The case's value of every knob, defaults filled in for those it does not set.

        With no names, a dict of every knob; with names, a tuple of those
        knobs' values in that order (``window, g = self.knob_values(case, "window", "global_tokens")``).
        """
        values = {**self.params, **case.params}
        return tuple(values[name] for name in names) if names else values

    def _sentence(self, template: str, case: Case) -> str:
        return template.format(device=case.device, devices=", ".join(self.devices),
                               dtype=case.dtype, dtypes=", ".join(self.dtypes))

    def tolerance(self, case: Case) -> Tolerance | None:
        """The bound `case`'s errors are judged against: `tolerances` of its dtype (None: not judged).

        Override to make it depend on more than the dtype (a scan whose error grows with seq_len).
        """
        return self.tolerances.get(case.dtype)

    def approximation(self, case: Case) -> str | None:
        """The exact function `case`'s output stands in for, or None where the variant computes its reference exactly.

        `approximates` by default; a variant that is exact on some cases (Longformer under its own
        sliding_window mask) returns None there, so its error is not reported as an approximation's.
        """
        return self.approximates

    def compiles_for(self, case: Case) -> bool:
        """Whether `prepare` runs torch.compile for `case`: `compiles`, unless a variant knows better per case
        (mamba-scan compiles only where its C scan cannot run)."""
        return self.compiles

    def execution(self, case: Case) -> str | None:
        """Which of its ways of computing the function runs `case`, for a variant that chooses per case.

        None by default (one way for every case). The cell stores the answer as
        ``telemetry["execution"]`` (the tidy column ``execution``), so a reader sees what ran.
        """
        return None

    def supports(self, case: Case) -> bool:
        return not self.unsupported_reasons(case)

    def prepare(self, case: Case, inputs: AttentionInputs) -> Callable[[], torch.Tensor]:
        """Build everything outside the timed region and return the forward.

        Weights, masks, compiled kernels and layout conversions belong here.
        The returned zero-argument callable computes the output from
        `inputs` and returns it; the harness times it, and in ``fwd_bwd``
        mode runs the backward of its output itself. Weights a variant
        learns are declared in `learned_weights` and read with
        `weights(case, inputs)` (seeded here, trained in a quality cell);
        other fixed weights must be derived from ``case.seed`` (see
        `seeded_weight`), so `reference` can rebuild them.
        """
        raise NotImplementedError

    def learned_weights(self, case: Case) -> Mapping[str, LearnedWeight]:
        """The weights this variant learns on `case`: name -> `LearnedWeight` (shape, initialiser, decay).

        Empty by default (a variant that learns nothing). Shapes follow from
        the case and its knobs. `prepare` and `reference` read the values with
        `weights(case, inputs)`; a kernel cell seeds them, a quality cell
        trains them as parameters of the model (`attnbench.core.learned`).
        """
        return {}

    def weights(self, case: Case, inputs: AttentionInputs) -> dict[str, torch.Tensor]:
        """The learned weights to compute with, name -> tensor in the inputs' dtype and device.

        The trainer's tensors when `inputs.weights` holds them (checked against
        `learned_weights` by name and shape), else each weight's seeded
        starting value (the case's seed and the weight's name fix it, rounded
        through the case's dtype), so `prepare` and the float64 `reference`
        see the same numbers. Call it in `prepare`, never in the timed forward.
        """
        declared = self.learned_weights(case)
        check_declared(self.name, declared)
        if inputs.weights is not None:
            return given_weights(self.name, declared, inputs.weights)
        return initial_weights(self.name, case, declared, inputs.v.dtype, inputs.v.device)

    def reference(self, case: Case, inputs: AttentionInputs, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The float64 output of the function this variant computes.

        `inputs` are the case's own inputs upcast to float64. When `rows`
        is given (only if `reference_rows`), return just those query rows,
        in that order. Plain torch, no cleverness: a reader checks it
        against the formula.
        """
        raise NotImplementedError

    def flops(self, case: Case) -> int:
        """Useful forward FLOPs of the function `case` computes (a multiply-add is 2).

        A property of the function (`computes`, the mask's visible pairs, heads
        and dims), not of the implementation: every variant of the same
        function returns the same number, so their FLOP/s compare like with
        like (TritonBench's rule). Softmax attention is
        ``attention_flops(case)``, 4·B·H·(visible pairs)·d. The harness counts
        a backward as 2.5 forwards.
        """
        raise NotImplementedError

    def performed_flops(self, case: Case) -> int | None:
        """The forward FLOPs this implementation really executes, or None when that is `flops`.

        Same units as `flops` (a multiply-add is 2). It differs where an
        implementation does work the function does not need: naive and
        SDPA's math backend form the full N×M products under a causal mask
        and mask afterwards, a blocked kernel computes whole blocks across the
        diagonal, a sparse kernel computes padded slots. None also means the
        variant cannot say (a closed kernel's internal tiling).
        """
        return None

    def memory_model(self, case: Case) -> int | None:
        """Analytic peak bytes the forward allocates beyond its inputs, or None if unknown."""
        return None

    def state_size(self, case: Case) -> int | None:
        """Elements this variant carries per sequence to produce the next token of `case`, or None if unknown.

        Zoology's "state size", the x axis on which recall is compared: softmax
        attention keeps its whole KV cache (kv_heads·kv_len·(head_dim + v_head_dim),
        `kv_state_size`), a sliding window only the window's keys and values, a
        linear-attention or state-space layer its fixed recurrent state.
        """
        return None

    def bytes_moved(self, case: Case) -> int | None:
        """The least bytes one call of this variant must move, or None for `Case.bytes_moved` (q, k, v and the output).

        A recurrent layer's decode step reads its fixed state in place of a KV
        cache: it declares the state read and written, the new tokens' q, k, v
        and the output, so the decode report shows state bytes beside softmax's
        KV-cache bytes at the same kv_len.
        """
        return None

    def attention_weights(self, case: Case, inputs: AttentionInputs) -> torch.Tensor | None:
        """The (B, H, N, M) weights each query puts on each key, in float64, or None.

        For the report's attention maps, on small cases only. Variants with
        explicit weights (softmax, additive, Luong, Longformer) return them;
        kernel methods return their implicit weights φ(q)·φ(k) normalised per
        row; variants with no such matrix (state-space scans) return None.
        """
        return None

    def probe_case(self, device: str) -> Case:
        """A small case in this variant's first dtype on `device`, used by `attnbench list`."""
        dtype = "float32" if "float32" in self.dtypes else self.dtypes[0]
        return Case(variant=self.name, seq_len=128, head_dim=64, heads=2, dtype=dtype,
                    device=device, params=dict(self.params))


def kv_state_size(case: Case, keys: int | None = None) -> int:
    """Elements of the keys and values one sequence keeps: kv_heads·keys·(head_dim + v_head_dim); keys defaults to kv_len."""
    kept = case.kv_len if keys is None else min(keys, case.kv_len)
    return case.kv_heads * kept * (case.head_dim + case.v_head_dim)


def seeded_weight(case: Case, tag: int, shape: tuple[int, ...], std: float = 1.0) -> torch.Tensor:
    """A float32 CPU tensor drawn from N(0, std**2), fixed by the case's seed and `tag`.

    Variants with learned weights draw them here in `prepare` and again in
    `reference`, so both see the same values.
    """
    import torch

    generator = torch.Generator().manual_seed(case.seed * 1_000_003 + 7919 * tag + 17)
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_reasons(minimum: tuple[int, int] | None) -> list[str]:
    """Why a CUDA case cannot run here: no device, or one older than `minimum`."""
    if not _cuda_available():
        return ["needs a CUDA device, and torch sees none here"]
    if minimum is None:
        return []
    import torch

    capability = tuple(torch.cuda.get_device_capability())
    if capability >= tuple(minimum):
        return []
    return [f"needs compute capability {minimum[0]}.{minimum[1]} or newer; "
            f"this GPU ({torch.cuda.get_device_name()}) has {capability[0]}.{capability[1]}"]
