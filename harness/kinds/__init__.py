"""The kinds of the axes whose values name one (`AXES.kind_axes()`), one subpackage per family.

Each kind is one small frozen object in its own file (attention-gym's style): it
reads its argument from the ``kind:arg,key=value`` text (`attnbench.core.kindtext`),
writes the canonical text and the label, checks a case, and gives what the kind
does: its Flex-style mask or score function, where its inputs come from, or its
per-sequence lengths. Each family's subpackage fills its registry (`MASKS`,
`SCORE_MODS`, `INPUTS`, `LENGTHS`, each a `family.KindFamily`); a plugin or a test
adds a kind with ``register``. Pure Python at import time: torch is imported
inside the functions that build tensors.
"""
