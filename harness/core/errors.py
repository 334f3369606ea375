"""Errors a user can cause. The CLI turns each into its message and exit status 2."""

from __future__ import annotations

import difflib


class AttnbenchError(Exception):
    """A mistake in what the user asked for: a suite, a flag, a run folder.

    The message names where the mistake is (file, key, variant), what was
    expected, and what to do. Nothing has been run when one is raised.
    """


class SuiteError(AttnbenchError):
    """A suite file that cannot be loaded: bad TOML, unknown key, wrong type or value."""


class UnknownVariantError(AttnbenchError):
    """A variant name that is not registered."""


class StoreError(AttnbenchError):
    """A run folder or run reference that cannot be read or used."""


class DeviceError(AttnbenchError):
    """A device that was asked for but is not present."""


class RunStopped(AttnbenchError):
    """The run could not go on (for example the disk is full); what was stored is intact."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean: a, b?)' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
