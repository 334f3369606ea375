"""The memory stage of a timed cell: the peak bytes of the forward (and of forward+backward) above the inputs."""

from __future__ import annotations

from attnbench.core.case import Case
from attnbench.core.result import Memory
from attnbench.core.variant import Variant
from attnbench.measure.cell.setup import Step
from attnbench.measure.memory import (
    cpu_allocated_peak_bytes,
    cpu_peak_bytes,
    cuda_peak_bytes,
    model_warning,
)


def measure_memory(case: Case, variant: Variant, step: Step) -> tuple[Memory, tuple[str, ...]]:
    """The cell's `Memory`, and a warning when the variant's `memory_model` predicted far less than measured.

    CUDA: the caching allocator's peak. CPU: the allocator's peak (reproducible), and the resident one.
    """
    memory = _peaks(case, variant, step)
    optimistic = model_warning(memory.peak_bytes_fwd, memory.predicted_bytes)
    return memory, (optimistic,) if optimistic else ()


def _peaks(case: Case, variant: Variant, step: Step) -> Memory:
    predicted = variant.memory_model(case)
    if case.device == "cuda":
        fwd = cuda_peak_bytes(step.forward_only)
        fwd_bwd = cuda_peak_bytes(step) if case.mode == "fwd_bwd" else None
        return Memory(peak_bytes_fwd=fwd.peak_bytes, peak_bytes_fwd_bwd=fwd_bwd.peak_bytes if fwd_bwd else None,
                      method=fwd.method, input_bytes=case.input_bytes, predicted_bytes=predicted)
    fwd = cpu_allocated_peak_bytes(step.forward_only)
    fwd_bwd = cpu_allocated_peak_bytes(step) if case.mode == "fwd_bwd" else None
    resident = cpu_peak_bytes(step.forward_only)
    resident_bwd = cpu_peak_bytes(step) if case.mode == "fwd_bwd" else None
    return Memory(peak_bytes_fwd=fwd.peak_bytes, peak_bytes_fwd_bwd=fwd_bwd.peak_bytes if fwd_bwd else None,
                  method=fwd.method, input_bytes=case.input_bytes, predicted_bytes=predicted,
                  resident_bytes_fwd=resident.peak_bytes,
                  resident_bytes_fwd_bwd=resident_bwd.peak_bytes if resident_bwd else None,
                  resident_method=resident.method)
