"""Multi-query associative recall (MQAR) data, by the rules of Zoology (Arora et al., 2023).

One example is ``seq_len`` tokens: first ``kv_pairs`` key–value pairs
(``k1 v1 k2 v2 ...``; keys distinct, drawn from the lower half of the
vocabulary without token 0, values distinct, from the upper half), then a
query region where each key appears once more at an even offset ``2·gap``
from the region's start. The gaps are distinct and drawn with probability
proportional to ``a·(gap+1)^(a−1)`` (a power law; ``power_a`` = 0.01 puts most
queries close to the context, as repeated bigrams are in text). The label at a
query's position is the value its key was paired with (the model predicts
the next token); every other label is ``IGNORE``. Positions that hold no key,
value or query are filled with random tokens of the whole vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class RecallBatch:
    """inputs (E, N) token ids and labels (E, N): the value expected after each query, IGNORE elsewhere."""

    inputs: torch.Tensor
    labels: torch.Tensor


def check_shape(seq_len: int, kv_pairs: int, vocab: int) -> list[str]:
    """Every reason (seq_len, kv_pairs, vocab) cannot make MQAR examples; empty when it can."""
    reasons = []
    if seq_len % 2:
        reasons.append(f"MQAR needs an even seq_len, not {seq_len}")
    if 4 * kv_pairs > seq_len:
        reasons.append(f"MQAR with {kv_pairs} key-value pairs needs seq_len >= {4 * kv_pairs} (the pairs, then "
                       f"room for one query per key), not {seq_len}")
    if vocab // 2 - 1 < kv_pairs or vocab - vocab // 2 < kv_pairs:
        reasons.append(f"a vocabulary of {vocab} holds fewer than {kv_pairs} distinct keys or values")
    return reasons


def recall_batch(examples: int, seq_len: int, kv_pairs: int, vocab: int, generator: torch.Generator,
                 power_a: float = 0.01) -> RecallBatch:
    """`examples` MQAR sequences drawn from `generator` (CPU): the same generator state, the same batch."""
    reasons = check_shape(seq_len, kv_pairs, vocab)
    if reasons:
        raise ValueError("; ".join(reasons))
    key_vocab = vocab // 2
    keys = torch.rand(examples, key_vocab - 1, generator=generator).argsort(-1)[:, :kv_pairs] + 1     # (E, D)
    values = torch.rand(examples, vocab - key_vocab, generator=generator).argsort(-1)[:, :kv_pairs] + key_vocab
    context = 2 * kv_pairs
    space = (seq_len - context) // 2
    weights = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)           # (space,)
    gaps = torch.multinomial(weights.expand(examples, space), kv_pairs, replacement=False,
                             generator=generator)                                                  # (E, D)
    inputs = torch.randint(vocab, (examples, seq_len), generator=generator)                       # (E, N)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    query_positions = context + 2 * gaps                                                           # (E, D)
    inputs.scatter_(1, query_positions, keys)
    labels = torch.full_like(inputs, IGNORE).scatter_(1, query_positions, values)
    return RecallBatch(inputs=inputs, labels=labels)
