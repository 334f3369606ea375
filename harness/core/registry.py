"""The registry of variants, loaded from the entry point group ``attnbench.variants``.

Built-in variants and third-party ones arrive the same way. A plugin that fails
to import, gives something that is not a variant, or reuses a taken name is
recorded as a `PluginFailure` (with the distribution it came from) and every
other variant still loads. ``ATTNBENCH_PLUGINS=name,name`` restricts which
entry points are loaded, for reproducible runs.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from attnbench.core.errors import UnknownVariantError, did_you_mean
from attnbench.core.variant import Variant

ENTRY_POINT_GROUP = "attnbench.variants"
BUILTIN_DISTRIBUTION = "attnbench"


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not become a variant, and why."""

    entry_point: str
    target: str
    distribution: str
    error: str
    detail: str = ""


@dataclass(frozen=True)
class Registry:
    """Variants by name, plus the plugins that failed to load."""

    variants: dict[str, Variant]
    failures: tuple[PluginFailure, ...]
    origins: dict[str, str]

    def names(self) -> list[str]:
        return sorted(self.variants)

    def get(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            failed = [f for f in self.failures if f.entry_point == name]
            if failed:
                raise UnknownVariantError(
                    f"variant {name!r} did not load: {failed[0].error} "
                    f"(from distribution {failed[0].distribution!r}); run 'attnbench list' for details"
                ) from None
            raise UnknownVariantError(
                f"unknown variant {name!r}{did_you_mean(name, self.variants)}; "
                f"'attnbench list' shows the {len(self.variants)} registered variants"
            ) from None


def _distribution_name(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return dist.metadata["Name"] if dist is not None else "unknown"


def _instantiate(obj) -> Variant:
    if isinstance(obj, type) and issubclass(obj, Variant):
        return obj()
    if isinstance(obj, Variant):
        return obj
    raise TypeError(f"it gave {obj!r}, which is not an attnbench.Variant subclass or instance (from attnbench import Variant)")


def load_registry(allowed: set[str] | None = None) -> Registry:
    """Load every entry point of the group (or only those named in `allowed`)."""
    if allowed is None:
        allowed = _allowed_from_environment()
    variants: dict[str, Variant] = {}
    origins: dict[str, str] = {}
    failures: list[PluginFailure] = []
    found = sorted(entry_points(group=ENTRY_POINT_GROUP),
                   key=lambda ep: (_distribution_name(ep) != BUILTIN_DISTRIBUTION, ep.name))
    for entry_point in found:
        if allowed is not None and entry_point.name not in allowed:
            continue
        distribution = _distribution_name(entry_point)

        def fail(error: str, detail: str = "", ep=entry_point, dist=distribution) -> None:
            failures.append(PluginFailure(ep.name, ep.value, dist, error, detail))

        try:
            variant = _instantiate(entry_point.load())
        except Exception as exc:  # a broken plugin must never stop the others
            fail(f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=4))
            continue
        if variant.name != entry_point.name:
            fail(f"entry point {entry_point.name!r} gives a variant named {variant.name!r}; the names must match")
            continue
        if variant.name in variants:
            fail(f"the name {variant.name!r} is already taken by distribution {origins[variant.name]!r}")
            continue
        variants[variant.name] = variant
        origins[variant.name] = distribution
    return Registry(variants=variants, failures=tuple(failures), origins=origins)


def _allowed_from_environment() -> set[str] | None:
    text = os.environ.get("ATTNBENCH_PLUGINS", "").strip()
    if not text:
        return None
    return {name.strip() for name in text.split(",") if name.strip()}


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry for this process, loaded once."""
    return load_registry()
