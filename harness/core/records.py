"""A frozen dataclass kept as JSON: its dict, and its construction from a stored dict. Pure Python."""

from __future__ import annotations

import dataclasses
from typing import Any, Self


class Record:
    """Mixin for a dataclass stored as a JSON object; `from_dict` drops keys this version has no field for."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
