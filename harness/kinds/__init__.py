"""The kinds of the axes whose values name one: `mask`, `score_mod` and `inputs`.

Each kind is one small frozen object in its own file (attention-gym's style): it
reads its argument from the ``kind:arg,key=value`` text (`attnbench.core.kindtext`),
writes the canonical text and the label, checks a case, and gives what the kind
does (a ``mask_mod`` and its visible pairs, a ``score_mod``, or where inputs come
from). Each family's package fills its registry (`MASKS`, `SCORE_MODS`, `INPUTS`);
a plugin or a test adds a kind with ``register``. Pure Python at import time:
torch is imported inside the functions that build tensors.
"""
