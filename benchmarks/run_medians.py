"""Per-variant median time of two stored runs side by side, at one seq_len.

    .venv/bin/python benchmarks/run_medians.py BEFORE_RUN AFTER_RUN [--seq-len 1024] [--results DIR]

BEFORE_RUN and AFTER_RUN are anything `attnbench show` takes (an id, a name, a
folder, `latest`). Cells are matched by variant, seq_len, dtype, causal and
mode rather than by case id, so runs written by different attnbench versions
line up. It prints each variant's median, samples and interval in both runs and
the ratio after/before. Used to check that a refactor left the quick suite's
results unchanged within noise; each run is one sequential sweep, so quote the
ratios as one run each, not as a paired measurement.
"""

from __future__ import annotations

import argparse

from attnbench.store import load_run, resolve_run, tidy_frame

MATCH = ["variant", "seq_len", "dtype", "causal", "mode"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--seq-len", type=int, action="append", default=None)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    seq_lens = args.seq_len or [1024]
    frames = [tidy_frame([load_run(resolve_run(ref, args.results))]) for ref in (args.before, args.after)]
    before, after = (f[f.seq_len.isin(seq_lens) & (f.status == "ok")] for f in frames)
    keep = MATCH + ["time_median_s", "reps"]
    joined = before[keep].merge(after[keep], on=MATCH, suffixes=("_before", "_after"))
    joined["ratio"] = joined.time_median_s_after / joined.time_median_s_before
    print(f"{'variant':16} {'N':>6} {'before ms':>10} {'n':>4} {'after ms':>10} {'n':>4} {'after/before':>13}")
    for row in joined.sort_values(["variant", "seq_len"]).itertuples():
        print(f"{row.variant:16} {row.seq_len:>6} {row.time_median_s_before * 1e3:>10.3f} {row.reps_before:>4} "
              f"{row.time_median_s_after * 1e3:>10.3f} {row.reps_after:>4} {row.ratio:>13.3f}")
    ratios = joined.ratio.sort_values()
    if len(ratios):
        print(f"median ratio over {len(ratios)} variants: {ratios.median():.3f} "
              f"(min {ratios.iloc[0]:.3f}, max {ratios.iloc[-1]:.3f})")


if __name__ == "__main__":
    main()
