"""Ragged batches (the `lengths` and `layout` axes) against definitions written one sequence, one pair at a time."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from tiny_suites import skip_unless_supported

from attnbench.attention.flops import attention_flops
from attnbench.attention.ragged import pack, padded_allowed, real_rows
from attnbench.core.case import Case
from attnbench.core.metrics import METRICS
from attnbench.core.registry import default_registry
from attnbench.core.settings import MeasureSettings
from attnbench.kinds.lengths import LENGTHS
from attnbench.kinds.lengths.batch import RaggedBatch, ragged_batch
from attnbench.measure.cell import measure_case
from attnbench.measure.inputs import make_inputs
from attnbench.plan.suite import expand, parse_suite

FAST = MeasureSettings(contention_retries=0, warmup_s=0.01, budget_s=0.02, min_reps=3, cap_s=0.5, memory=False,
                       telemetry=False)


def ragged_case(variant="naive", lengths="lognormal:24,0.7", layout="packed", causal=True, batch=5, **fields):
    shape = dict(seq_len=48, heads=4, kv_heads=2, head_dim=24, seed=3) | fields
    return Case(variant=variant, batch=batch, causal=causal, lengths=lengths, layout=layout, **shape)


def by_definition(case: Case) -> list[torch.Tensor]:
    """Each sequence's float64 output (H, q_s, d_v) from the formula, one query and one key at a time.

    Sequence s is the first q_s query rows and m_s key rows of batch entry s; query i sits at key position
    i + m_s - q_s (causal: it sees the keys up to there); head h reads key/value head h // (H / Hkv).
    """
    q, k, v = (t.double() for t in make_inputs(case).tensors())
    batch, groups = ragged_batch(case), case.heads // case.kv_heads
    outputs = []
    for s, (nq, nk) in enumerate(zip(batch.queries, batch.keys, strict=True)):
        out = torch.zeros(case.heads, nq, case.v_head_dim, dtype=torch.float64)
        for h in range(case.heads):
            for i in range(nq):
                keys = [j for j in range(nk) if not (case.causal and j > i + nk - nq)]
                scores = [float(q[s, h, i] @ k[s, h // groups, j]) / math.sqrt(case.head_dim) for j in keys]
                top = max(scores)
                weights = [math.exp(x - top) for x in scores]
                out[h, i] = sum(w * v[s, h // groups, j] for w, j in zip(weights, keys, strict=True)) / sum(weights)
        outputs.append(out)
    return outputs


# --- the distributions -------------------------------------------------------------------------------------------

def test_each_distribution_draws_seeded_lengths_of_its_shape():
    def keys(lengths, batch=400, seed=0, seq_len=2048):
        return ragged_batch(Case(variant="naive", seq_len=seq_len, batch=batch, lengths=lengths, seed=seed)).keys

    uniform = keys("uniform:10-20")
    assert min(uniform) == 10 and max(uniform) == 20 and len(set(uniform)) == 11
    lognormal = keys("lognormal:100,0.5")
    assert 85 <= statistics.median(lognormal) <= 115                               # the median is MEDIAN
    assert 0.4 < statistics.stdev(math.log(n) for n in lognormal) < 0.6             # log-lengths' spread is SIGMA
    bimodal = keys("bimodal:16,512,0.25")
    assert set(bimodal) == {16, 512} and 0.18 < bimodal.count(512) / 400 < 0.32
    outlier = keys("outlier:32,1000", batch=9)
    assert sorted(outlier) == [32] * 8 + [1000]
    assert keys("lognormal:100,0.5", seed=1) != lognormal and keys("lognormal:100,0.5") == lognormal
    assert max(keys("lognormal:100,3", seq_len=300)) == 300 and min(keys("lognormal:2,3")) >= 1   # clipped to [1, cap]
    fixed = ragged_batch(Case(variant="naive", seq_len=64, batch=3))
    assert fixed.keys == fixed.queries == (64, 64, 64)


def test_decode_and_mixed_batches_pair_each_sequence_with_its_queries():
    decode = ragged_batch(Case(variant="naive", seq_len=4, kv_len=256, batch=50, lengths="lognormal:64,1.0"))
    assert decode.queries == tuple(min(4, m) for m in decode.keys) and min(decode.keys) < 4 < max(decode.keys)
    mixed = ragged_batch(Case(variant="naive", seq_len=96, batch=5, lengths="mixed:2,96,3,40"))
    assert mixed.queries == (96, 96, 1, 1, 1) and mixed.keys == (96, 96, 40, 40, 40)
    with pytest.raises(ValueError, match=r"mixed:2,96,3,40 is a batch of 5 sequences, but batch is 4; set batch = 5"):
        Case(variant="naive", seq_len=96, batch=4, lengths="mixed:2,96,3,40")
    with pytest.raises(ValueError, match=r"needs seq_len >= 96 and kv_len >= 96"):
        Case(variant="naive", seq_len=64, batch=5, lengths="mixed:2,96,3,40")


def test_a_trace_file_gives_its_lengths_as_lines_or_a_csv_column(tmp_path):
    lines = tmp_path / "prompts.txt"
    lines.write_text("# prompt tokens\n7\n\n300\n12\n")
    table = tmp_path / "trace.csv"
    table.write_text("request,input_tokens\na,5\nb,9\n")
    assert set(ragged_batch(Case(variant="naive", seq_len=100, batch=40, lengths=f"file:{lines}")).keys) == {7, 100, 12}
    from_csv = Case(variant="naive", seq_len=100, batch=40, lengths=f"file:{table},column=input_tokens")
    assert set(ragged_batch(from_csv).keys) == {5, 9} and from_csv.lengths.endswith(",column=input_tokens")
    with pytest.raises(ValueError, match=r"the CSV has no column 'output' \(columns: request, input_tokens\)"):
        Case(variant="naive", seq_len=100, lengths=f"file:{table},column=output")
    with pytest.raises(ValueError, match="no such file"):
        Case(variant="naive", seq_len=100, lengths=f"file:{tmp_path}/missing.txt")


@pytest.mark.parametrize(("text", "message"), [
    ("uniform:9-3", r"needs 1 <= LO <= HI"),
    ("lognormal:100", r"needs 2 numbers after the colon \(MEDIAN, SIGMA\), e.g. lognormal:256,0.8"),
    ("bimodal:8,64,1.5", r"P_LONG is a probability"),
    ("outlier:0,64", r"BASE must be a whole number of at least 1"),
    ("zipf:2", r"unknown lengths 'zipf:2': expected fixed .*, uniform:LO-HI .*, or mixed:"),
])
def test_a_wrong_lengths_text_says_what_is_expected(text, message):
    with pytest.raises(ValueError, match=message):
        Case(variant="naive", seq_len=64, lengths=text)


def test_lengths_and_layout_have_canonical_texts_labels_and_stable_ids():
    case = Case(variant="naive", seq_len=64, batch=4, lengths="LogNormal:32,0.50", layout="packed")
    assert case.lengths == "lognormal:32,0.5" and case.label.endswith("-lognormal32-0.5-packed")
    assert Case(variant="naive", seq_len=64).id == Case(variant="naive", seq_len=64, lengths="fixed", layout="padded").id
    assert LENGTHS.canonical("uniform:1-5") == "uniform:1-5"
    with pytest.raises(ValueError, match="layout must be one of padded, packed"):
        Case(variant="naive", seq_len=64, layout="jagged")


# --- the counts ------------------------------------------------------------------------------------------------

def test_pairs_padding_waste_and_imbalance_count_what_the_layouts_form():
    batch = RaggedBatch(queries=(3, 1, 4), keys=(3, 5, 4), causal=True)
    # causal pairs one row at a time: row i of a sequence sees i + 1 + (m - q) keys
    by_rows = [sum(min(m, i + 1 + m - q) for i in range(q)) for q, m in zip(batch.queries, batch.keys, strict=True)]
    assert batch.pairs() == tuple(by_rows) == (6, 5, 10)
    assert batch.cu_seqlens_q == (0, 3, 4, 8) and batch.cu_seqlens_k == (0, 3, 8, 12)
    assert batch.padding_waste("padded") == 3 * 4 * 5 / (9 + 5 + 16)
    assert batch.padding_waste("packed") == 1.0
    assert batch.imbalance() == 10 / (21 / 3)
    assert RaggedBatch((4, 4), (4, 4)).imbalance() == 1.0


def test_flops_count_each_sequences_real_pairs_and_performed_flops_the_padding():
    case = ragged_case(layout="padded")
    batch = ragged_batch(case)
    allowed = padded_allowed(batch)[:, 0]                                       # (B, N_max, M_max)
    real = sum(int(allowed[s, :nq].sum()) for s, nq in enumerate(batch.queries))
    assert attention_flops(case) == 2 * case.heads * real * (case.head_dim + case.v_head_dim)
    naive = default_registry().get("naive")
    assert naive.performed_flops(case) == 2 * case.heads * batch.size * batch.max_queries * batch.max_keys * 48
    packed = ragged_case(layout="packed")
    assert naive.performed_flops(packed) == 2 * packed.heads * sum(
        q * m for q, m in zip(batch.queries, batch.keys, strict=True)) * 48


# --- the variants against the definition ----------------------------------------------------------------------

EXACT = [("naive", "padded"), ("naive", "packed"), ("sdpa-math", "padded"), ("sdpa-flash", "padded"),
         ("sdpa-flash", "packed"), ("flash-tiled", "packed")]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize(("variant", "layout"), EXACT, ids=[f"{v}-{lay}" for v, lay in EXACT])
def test_a_ragged_batch_matches_the_definition_sequence_by_sequence(variant, layout, causal):
    case = ragged_case(variant, layout=layout, causal=causal)
    inputs = make_inputs(case)
    out = default_registry().get(variant).prepare(case, inputs)()
    got = real_rows(out.detach(), case)[0].double()                             # (H, Σq, d_v)
    expected = torch.cat(by_definition(case), dim=-2)                           # (H, Σq, d_v)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5)


def test_packed_flex_takes_a_mixed_batch_in_one_call_and_matches_the_definition():
    case = ragged_case("flex", lengths="mixed:2,40,3,24", batch=5, seq_len=40, head_dim=32)
    variant = default_registry().get("flex")
    skip_unless_supported(variant, case)
    out = variant.prepare(case, make_inputs(case))()
    assert out.shape == (1, 4, 2 * 40 + 3, 32)                                    # the packed tokens, one call
    torch.testing.assert_close(out[0].double(), torch.cat(by_definition(case), dim=-2), rtol=2e-5, atol=2e-5)
    assert variant.execution(case) == "one call over packed offsets"


def test_a_measured_ragged_cell_stores_its_figures_and_is_judged_on_real_rows():
    case = ragged_case("sdpa-math", layout="padded", lengths="outlier:6,40")
    result = measure_case(case, default_registry().get("sdpa-math"), FAST, None)
    batch = ragged_batch(case)
    assert result.status == "ok" and result.accuracy.ok
    assert METRICS["padding_waste"].read(result) == batch.padding_waste("padded") > 4
    assert METRICS["imbalance"].read(result) == batch.imbalance() > 3
    assert METRICS["execution"].read(result) == "one call, padded to the longest and masked"
    assert result.flops == attention_flops(case) < result.performed_flops


def test_padding_rows_are_not_judged_but_a_wrong_real_row_is():
    case = ragged_case(layout="padded", lengths="uniform:5-30")
    inputs = make_inputs(case)
    out = default_registry().get("naive").prepare(case, inputs)().clone()
    batch = ragged_batch(case)
    short = batch.queries.index(min(batch.queries))
    out[short, :, batch.queries[short]:] = 1e6                                  # padding: never read
    torch.testing.assert_close(real_rows(out, case)[0].double(), torch.cat(by_definition(case), dim=-2),
                               rtol=2e-5, atol=2e-5)
    out[short, 0, 0] += 1.0                                                      # a real row
    assert not torch.allclose(real_rows(out, case)[0].double(), torch.cat(by_definition(case), dim=-2), atol=1e-3)
    assert torch.equal(pack(out, batch.queries)[0, :, 0], out[0, :, 0])


def test_what_cannot_run_a_ragged_batch_says_why():
    registry = default_registry()
    tiled = ragged_case("flash-tiled", layout="padded")
    assert any("has no padded ragged layout" in r and "use layout = packed" in r
               for r in registry.get("flash-tiled").unsupported_reasons(tiled))
    assert any("takes no ragged batch" in r for r in registry.get("performer").unsupported_reasons(
        ragged_case("performer", kv_heads=4)))
    backward = ragged_case(mode="fwd_bwd")
    assert any("forward only" in r for r in registry.get("naive").unsupported_reasons(backward))
    masked = ragged_case(mask="sliding_window:8")
    assert any("takes the causal flag only" in r for r in registry.get("naive").unsupported_reasons(masked))


def test_a_suite_sweeps_lengths_and_layouts():
    text = ('[suite]\nname = "t"\nvariants = ["naive"]\n[defaults]\nbatch = 4\n'
            '[sweep]\nseq_len = [64]\nlengths = ["fixed", "bimodal:8,64,0.5"]\nlayout = ["padded", "packed"]\n')
    cases = expand(parse_suite(text, "t.toml"), default_registry())
    assert sorted((c.lengths, c.layout) for c in cases) == sorted(
        (lengths, layout) for lengths in ("fixed", "bimodal:8,64,0.5") for layout in ("padded", "packed"))
    with pytest.raises(Exception, match=r"t\.toml.*lengths"):
        expand(parse_suite(text.replace("bimodal:8,64,0.5", "bimodal:8"), "t.toml"), default_registry())


def test_a_ragged_run_stores_its_figures_in_the_frame_and_the_report_draws_them(results_dir):
    from attnbench.engine.sweep import run_suite
    from attnbench.report import build_report_html
    from attnbench.report.ragged import ragged_views
    from attnbench.store import load_run, tidy_frame

    text = ('[suite]\nname = "r"\nvariants = ["naive"]\n[defaults]\nbatch = 4\nheads = 2\nhead_dim = 16\n'
            'causal = true\n[sweep]\nseq_len = [32]\nlengths = ["uniform:4-32", "outlier:4,32"]\n'
            'layout = ["padded", "packed"]\n'
            '[measure]\nwarmup_s = 0.01\nbudget_s = 0.05\nmin_reps = 3\ncontention_retries = 0\n')
    loaded = load_run(run_suite(parse_suite(text, "r.toml"), default_registry(), results_dir).run_path)
    frame = tidy_frame([loaded])
    assert len(frame) == 4 and (frame["status"] == "ok").all() and frame["accuracy_ok"].all()
    for row in frame.itertuples(index=False):
        case = Case(variant="naive", seq_len=32, batch=4, heads=2, head_dim=16, causal=True, lengths=row.lengths,
                    layout=row.layout)
        assert row.padding_waste == ragged_batch(case).padding_waste(row.layout)
        assert row.imbalance == ragged_batch(case).imbalance()
    (view,) = ragged_views(frame)
    assert sorted((r["lengths"], r["backend"]) for r in view.rows) == sorted(
        (lengths, f"naive {layout}") for lengths in ("uniform:4-32", "outlier:4,32") for layout in ("padded", "packed"))
    page = build_report_html([loaded])
    assert "4c Ragged batches: time against padding waste and imbalance" in page and view.uri[:40] in page


def test_a_ragged_batch_moves_its_real_tokens_only():
    from attnbench.measure.cell.derived import traffic

    case = ragged_case(layout="padded", kv_heads=4, head_dim=24)
    batch = ragged_batch(case)
    tokens = batch.total_queries * 4 * 24 * 2 + batch.total_keys * 4 * 24 * 2          # q and out; k and v
    assert traffic(case, 1.0, None)["bytes_moved"] == tokens * 4 < case.bytes_moved


def test_llm_serving_expands_to_its_workloads_with_a_reason_for_every_cell_that_cannot_run():
    from attnbench.plan.suite import load_suite

    registry = default_registry()
    cases = expand(load_suite("llm-serving"), registry)
    assert {(c.heads, c.kv_heads) for c in cases} == {(32, 8), (28, 4)} and all(c.causal for c in cases)
    key = {(c.variant, c.layout) for c in cases if c.lengths.startswith("lognormal:96") and c.batch == 16}
    assert {("flex", "packed"), ("sdpa-flash", "padded"), ("sdpa-math", "padded")} <= key
    assert any(c.lengths.startswith("mixed:") for c in cases) and any(c.seq_len < c.kv_len for c in cases)
    for case in (c for c in cases if c.variant != "flex"):             # flex's compiler may be missing elsewhere
        reasons = registry.get(case.variant).unsupported_reasons(case)
        assert not reasons or (case.variant == "flash-tiled" and case.layout == "padded"), (case.label, reasons)
