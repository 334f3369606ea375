"""The setup contract: what is derived from the case is built in `prepare`, never in the timed step.

Weights (`seeded_weight`), masks, index tensors and device copies belong in
`prepare`; the callable it returns only computes. For every registered
variant that can run a small case here, the harness's own timed callable
(`attnbench.measure.cell.setup.Step`: the forward, under inference mode in ``fwd``;
the forward and its backward in ``fwd_bwd``) runs once as warm-up and then
under `SetupRecorder`, a TorchDispatchMode that sees every aten op. The step
must draw no random numbers (a weight drawn there, even from a seeded
generator, is setup inside the timed region) and copy nothing between devices
(a weight or mask moved there with ``.to(device)``, or a device value read on
the host).

Composite ops (which a dispatch mode sees undecomposed under inference mode)
are decomposed so the recorder sees what they run. Variants that use
torch.compile (flex, longformer-flex, mamba-scan) are checked too: dynamo does
not compile while a dispatch mode is active, so the step runs under
``torch.compiler.set_stance("force_eager")``, which runs the same Python the
compiled graph was traced from. flex_attention is a higher-order op: the
recorder sees it as one op, with the devices of its tensor arguments; what
runs inside it is the attention kernel and its mask_mod, evaluated in place.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.core.variant import AttentionInputs, Variant
from attnbench.measure.cell.setup import Step
from attnbench.measure.inputs import make_inputs

# Ops that draw random numbers. Most also carry the tag `nondeterministic_seeded`, which
# `_draws_random_numbers` reads too; the names catch those that do not.
RANDOM_OPS = frozenset({
    "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "normal", "normal_",
    "uniform_", "bernoulli", "bernoulli_", "multinomial", "exponential_", "geometric_", "cauchy_",
    "log_normal_", "random_", "poisson", "binomial", "native_dropout", "rrelu_with_noise", "_standard_gamma",
    "_sample_dirichlet",
})
# Ops that copy a tensor, maybe to another device.
COPY_OPS = frozenset({"_to_copy", "to", "copy_", "copy", "_copy_from", "_copy_from_and_resize", "lift_fresh_copy"})

REGISTRY = default_registry()
# (label, seq_len, kv_len, causal): square, and under a causal mask a decode-like shape (kv_len > seq_len).
SHAPES = [("full", 64, 64, False), ("causal", 64, 64, True), ("causal-decode", 16, 80, True)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _op_name(func) -> str:
    packet = getattr(func, "overloadpacket", None)
    return packet.__name__ if packet is not None else func.name()


def _is_composite(func) -> bool:
    return isinstance(func, torch._ops.OpOverload) and torch._C._dispatch_has_kernel_for_dispatch_key(
        func.name(), torch._C.DispatchKey.CompositeImplicitAutograd)


def _draws_random_numbers(func, args, kwargs) -> bool:
    if _op_name(func) in RANDOM_OPS:
        return True
    if torch.Tag.nondeterministic_seeded not in getattr(func, "tags", ()):
        return False
    # Attention kernels (SDPA and its backends) carry the tag for their dropout: random only with dropout_p > 0.
    for index, argument in enumerate(func._schema.arguments):
        if argument.name == "dropout_p":
            value = kwargs.get("dropout_p", args[index] if index < len(args) else argument.default_value)
            return bool(value)
    return True


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


class SetupRecorder(TorchDispatchMode):
    """Records the aten ops that draw random numbers or move data between devices."""

    supports_higher_order_operators = True

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.random: list[str] = []
        self.cross_device: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        name = _op_name(func)
        if _draws_random_numbers(func, args, kwargs):
            self.random.append(str(func))
        if _is_composite(func):
            with self:                                   # see what the composite runs, too
                out = func.decompose(*args, **kwargs)
            if out is NotImplemented:
                out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        self._check_devices(func, name, args, kwargs, out)
        return out

    def _check_devices(self, func, name, args, kwargs, out) -> None:
        tensors = _tensors((args, kwargs, out))
        if name == "_local_scalar_dense" and tensors and tensors[0].device.type != "cpu":
            self.cross_device.append(f"{func} reads a {tensors[0].device} value on the host")
            return
        if name not in COPY_OPS:
            # A CPU scalar tensor may join a device op as a plain number; that is no copy.
            tensors = [t for t in tensors if t.dim() > 0 or t.device.type != "cpu"]
        devices = sorted({str(t.device) for t in tensors})
        if len(devices) > 1:
            self.cross_device.append(f"{func} touches tensors on {', '.join(devices)}")


def _eagerly():
    """Compiled functions run their Python eagerly (dynamo does not compile under a dispatch mode)."""
    set_stance = getattr(torch.compiler, "set_stance", None)                  # torch >= 2.6
    return set_stance("force_eager") if set_stance else torch._dynamo.config.patch(disable=True)


def setup_violations(step) -> tuple[SetupRecorder, list[str]]:
    """Run `step` (warmed up already) under `SetupRecorder`; what it did that belongs in `prepare`."""
    recorder = SetupRecorder()
    with _eagerly(), recorder:
        step()
    problems = [f"draws random numbers: {op}" for op in sorted(set(recorder.random))]
    problems += [f"copies across devices: {what}" for what in sorted(set(recorder.cross_device))]
    return recorder, problems


def _case(variant: Variant, device: str, shape, mode: str) -> Case:
    _, seq_len, kv_len, causal = shape
    dtype = "float32" if "float32" in variant.dtypes else variant.dtypes[0]
    return Case(variant=variant.name, seq_len=seq_len, kv_len=kv_len, batch=1, heads=2, head_dim=32,
                dtype=dtype, causal=causal, mode=mode, device=device, params=dict(variant.params))


def _warmed_step(variant: Variant, case: Case) -> Step:
    inputs = make_inputs(case, requires_grad=case.mode == "fwd_bwd")
    step = Step(case, inputs, variant.prepare(case, inputs))
    step()                                               # warm-up: lazy initialisation, the seeded upstream gradient
    return step


def _params():
    for name in REGISTRY.names():
        for device in DEVICES:
            for shape in SHAPES:
                for mode in ("fwd", "fwd_bwd"):
                    if REGISTRY.get(name).supports(_case(REGISTRY.get(name), device, shape, mode)):
                        yield pytest.param(name, device, shape, mode, id=f"{name}-{device}-{shape[0]}-{mode}")


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(("name", "device", "shape", "mode"), list(_params()))
def test_the_timed_step_does_no_setup(name, device, shape, mode):
    variant = REGISTRY.get(name)
    case = _case(variant, device, shape, mode)
    recorder, problems = setup_violations(_warmed_step(variant, case))
    assert recorder.ops > 0, f"{name}: the recorder saw no op at all, so it checked nothing"
    assert not problems, (f"{name} ({case.label}) does setup in its timed step; build it in prepare():\n  "
                          + "\n  ".join(problems))


# ------------------------------------------------------- the checker catches what it must

class _PlantedVariant(Variant):
    """A variant that does setup in its forward: what the checker above must catch."""

    name = "planted"
    computes = "softmax_attention"

    def __init__(self, mistake: str) -> None:
        self.mistake = mistake

    def prepare(self, case: Case, inputs: AttentionInputs):
        q, k, v = inputs.tensors()
        weight = torch.randn(case.head_dim, case.head_dim, generator=torch.Generator().manual_seed(case.seed))
        on_gpu = torch.ones(1, device="cuda") if self.mistake == "host-read" else None

        def forward() -> torch.Tensor:
            w = weight
            if self.mistake == "randn":
                w = torch.randn(case.head_dim, case.head_dim)          # a weight drawn on every call
            elif self.mistake == "seeded":
                w = torch.randn(case.head_dim, case.head_dim,          # the same, from a seeded generator
                                generator=torch.Generator().manual_seed(case.seed))
            elif self.mistake == "dropout":
                w = torch.nn.functional.dropout(weight, 0.1, training=True)   # random inside a composite op
            elif self.mistake == "device":
                weight.to("meta")                                      # a copy to another device on every call
            elif self.mistake == "host-read":
                w = weight * float(on_gpu.sum())                       # a device value read on the host
            return torch.softmax((q @ w) @ k.transpose(-2, -1), dim=-1) @ v

        return forward


def _planted_step(mistake: str) -> Step:
    variant = _PlantedVariant(mistake)
    case = Case(variant="planted", seq_len=16, heads=2, head_dim=8)
    inputs = make_inputs(case)
    step = Step(case, inputs, variant.prepare(case, inputs))
    step()
    return step


@pytest.mark.parametrize("mistake", ["randn", "seeded", "dropout", "device",
                                     pytest.param("host-read", marks=pytest.mark.cuda)])
def test_the_checker_catches_planted_setup(mistake):
    _, problems = setup_violations(_planted_step(mistake))
    assert problems, f"the checker missed a forward that does setup ({mistake})"
    kind = "copies across devices" if mistake in ("device", "host-read") else "draws random numbers"
    assert all(p.startswith(kind) for p in problems), problems


def test_the_checker_passes_a_clean_forward():
    recorder, problems = setup_violations(_planted_step("none"))
    assert recorder.ops > 0 and problems == []
