"""Train one MQAR quality cell in this process and print its recall, learning curve and weight changes.

The same `train_recall` a quality cell runs, without the worker, the store or a kernel cell: for budget
probes (how many steps a mixer needs) before choosing a suite's settings.

    python benchmarks/train_mqar_cell.py VARIANT STEPS LR [seq_len=64] [batch=32] [seed=0] [heads=2]
                                        [head_dim=32] [KNOB=VALUE ...]

seq_len 64, 8 key-value pairs, vocabulary 128, 2 layers, d_model = heads·head_dim, as the mqar suites.
"""
import sys
import time

import torch

from attnbench.core.case import Case
from attnbench.core.registry import default_registry
from attnbench.tasks.train import train_recall


def main() -> None:
    torch.set_num_threads(2)
    name, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    extra = dict(a.split("=", 1) for a in sys.argv[4:])
    shape = {axis: int(extra.pop(axis, default)) for axis, default in
             (("seq_len", 64), ("batch", 32), ("seed", 0), ("heads", 2), ("head_dim", 32))}
    params = {knob: int(value) for knob, value in extra.items()}
    case = Case(variant=name, causal=True, mode="fwd_bwd", params=params, **shape,
                task=f"mqar:kv_pairs=8,vocab=128,layers=2,steps={steps},lr={lr},test_examples=512")
    start = time.perf_counter()

    def progress(step: int, total: int, loss: float) -> None:
        if step % max(1, total // 10) == 1:
            print(f"  step {step}/{total} loss {loss:.3f} t={time.perf_counter() - start:.0f}s", flush=True)

    out = train_recall(default_registry().get(name), case, progress)
    curve = [(seen, round(recall, 3)) for seen, recall in out.recall_curve]
    changes = {weight: round(change, 3) for weight, change in out.weight_change}
    print(f"{name} {params} {shape} steps={steps} lr={lr:g}: recall {out.accuracy:.3f}, train {out.train_s:.0f} s, "
          f"eval {out.eval_s:.0f} s\n  curve (examples, recall): {curve}\n  weight change: {changes}", flush=True)


if __name__ == "__main__":
    main()
