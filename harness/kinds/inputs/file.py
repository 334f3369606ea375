"""``file:PATH``: q, k and v read from a safetensors file (`attnbench.measure.input_files`)."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.core.kindtext import KindText
from attnbench.kinds.inputs.base import InputKind


@dataclass(frozen=True)
class File(InputKind):
    def read(self, split: KindText) -> str:
        if not split.arg:
            raise split.error("needs a path after 'file:', e.g. file:captured/layer0.safetensors")
        return split.arg

    def text(self, path: str) -> str:
        return f"file:{path}"

    def label(self, path: str) -> str:
        return "file" + path.rsplit("/", 1)[-1].removesuffix(".safetensors")


FILE = File("file", "file:PATH (q, k and v from a safetensors file)", whole_arg=True, reads_file=True)
