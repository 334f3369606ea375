"""``mixed:PREFILLS,PREFILL_LEN,DECODES,DECODE_KV``: a serving step, as vLLM schedules one.

PREFILLS prompts of PREFILL_LEN tokens each (causal over themselves when the
case is causal) and DECODES sequences of one new query against DECODE_KV
cached keys, in one batch of PREFILLS + DECODES sequences (the case's batch).
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.lengths.base import LengthsKind, numbers, whole


@dataclass(frozen=True)
class Mixed(LengthsKind):
    def read(self, split: KindText) -> tuple[int, int, int, int]:
        names = ("PREFILLS", "PREFILL_LEN", "DECODES", "DECODE_KV")
        values = numbers(split, names, "mixed:2,256,32,128")
        prefills, prefill_len, decodes, decode_kv = (whole(v, n, split, minimum=0 if n in ("PREFILLS", "DECODES")
                                                           else 1) for v, n in zip(values, names, strict=True))
        if prefills + decodes < 1:
            raise split.error("needs at least one sequence (PREFILLS + DECODES >= 1)")
        return (prefills, prefill_len, decodes, decode_kv)

    def sequences(self, arg, batch, seq_len, kv_len, seed):
        prefills, prefill_len, decodes, decode_kv = arg
        return ((prefill_len, prefill_len),) * prefills + ((1, decode_kv),) * decodes

    def check(self, case, arg) -> None:
        prefills, prefill_len, decodes, decode_kv = arg
        if case.batch != prefills + decodes:
            raise ValueError(f"lengths {self.text(arg)} is a batch of {prefills + decodes} sequences, but batch is "
                             f"{case.batch}; set batch = {prefills + decodes}")
        if case.seq_len < prefill_len or case.kv_len < max(prefill_len, decode_kv):
            raise ValueError(f"lengths {self.text(arg)} needs seq_len >= {prefill_len} and kv_len >= "
                             f"{max(prefill_len, decode_kv)} (the buffers hold the longest sequence), got "
                             f"seq_len={case.seq_len}, kv_len={case.kv_len}")


MIXED = Mixed("mixed", "mixed:PREFILLS,PREFILL_LEN,DECODES,DECODE_KV (prefills and one-token decodes in one batch)",
              whole_arg=True)
