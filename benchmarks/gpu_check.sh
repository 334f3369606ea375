#!/usr/bin/env bash
# The prepared GPU check: the `cuda`-marked tests and the gpu-smoke suite (a few cells per
# variant on CUDA, bf16, fwd and fwd_bwd), with results and a report under OUT.
#
#   bash benchmarks/gpu_check.sh OUT [--dry-run] [--wheelhouse DIR]
#
# It uses the machine's own Python and PyTorch (PYTHON, default python3) and installs nothing
# from a network: attnbench is laid out under OUT/stage by benchmarks/stage_package.py and put
# on PYTHONPATH. A dependency the machine lacks (psutil, say) is installed from wheel files in
# --wheelhouse (default benchmarks/wheelhouse; fill it on a networked machine with
# `pip download psutil --only-binary=:all: --python-version 3.12 -d benchmarks/wheelhouse`).
# Each step has a time limit so the whole check ends within 8 minutes on one H100; a step that
# fails or runs out of time is reported and the next one still runs. Exit status: 0 when every
# step passed, 1 otherwise, 2 on a usage error.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WHEELHOUSE="$ROOT/benchmarks/wheelhouse"
TESTS_LIMIT_S=150
SUITE_LIMIT_S=280
REPORT_LIMIT_S=30
DRY_RUN=0
OUT=""

usage() { echo "usage: bash benchmarks/gpu_check.sh OUT [--dry-run] [--wheelhouse DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --wheelhouse) [ $# -ge 2 ] || usage; WHEELHOUSE="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu_check: unknown option '$1'" >&2; usage ;;
        *) [ -z "$OUT" ] || usage; OUT="$1" ;;
    esac
    shift
done
[ -n "$OUT" ] || usage
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"

STAGE="$OUT/stage"
DEPS="$OUT/deps"
export PYTHONPATH="$STAGE:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
export ATTNBENCH_CACHE_DIR="$OUT/cache"
export TORCHINDUCTOR_CACHE_DIR="$OUT/cache/inductor"
NEEDED=(torch numpy pandas scipy seaborn matplotlib rich click jinja2 safetensors psutil pynvml pytest)
mapfile -t CUDA_TEST_FILES < <(cd "$ROOT" && grep -l "pytest.mark.cuda" tests/test_*.py | sort)

"$PYTHON" "$ROOT/benchmarks/stage_package.py" "$STAGE" >/dev/null || { echo "gpu_check: staging attnbench failed" >&2; exit 1; }

missing_modules() {
    "$PYTHON" - "${NEEDED[@]}" <<'EOF'
import importlib.util, sys
print(" ".join(name for name in sys.argv[1:] if importlib.util.find_spec(name) is None))
EOF
}

PYTEST_PLUGIN_ARGS=()
if ! "$PYTHON" -c "import pytest_benchmark" 2>/dev/null; then
    PYTEST_PLUGIN_ARGS=(-p no:attnbench)   # attnbench's pytest plugin needs pytest-benchmark; the cuda tests do not
fi
PYTEST_CMD=("$PYTHON" -m pytest -q -m cuda -p no:cacheprovider "${PYTEST_PLUGIN_ARGS[@]}"
            --junitxml "$OUT/cuda-tests.xml" "${CUDA_TEST_FILES[@]}")
SUITE_CMD=("$PYTHON" -m attnbench.cli run gpu-smoke --results "$OUT/results" --no-report)
REPORT_CMD=("$PYTHON" -m attnbench.cli report latest --results "$OUT/results" -o "$OUT/gpu-smoke.html")

if [ "$DRY_RUN" = 1 ]; then
    LISTER="$PYTHON"   # collecting the tests and expanding the suite import torch; a dry run may borrow the checkout's venv
    if ! "$PYTHON" -c "import torch" 2>/dev/null && [ -x "$ROOT/.venv/bin/python" ]; then
        LISTER="$ROOT/.venv/bin/python"
        echo "gpu_check --dry-run: $PYTHON has no torch; listing with $LISTER"
    fi
    echo "gpu_check --dry-run: nothing is run; on a CUDA machine it would run, from $ROOT:"
    echo "1. the cuda-marked tests (limit ${TESTS_LIMIT_S} s), JUnit XML in $OUT/cuda-tests.xml:"
    echo "   PYTHONPATH=$PYTHONPATH ${PYTEST_CMD[*]}"
    (cd "$ROOT" && "$LISTER" -m pytest --collect-only -q -m cuda -p no:cacheprovider "${PYTEST_PLUGIN_ARGS[@]}" \
        "${CUDA_TEST_FILES[@]}" 2>/dev/null | grep '::' | sed 's/^/     /')
    echo "2. the gpu-smoke suite (limit ${SUITE_LIMIT_S} s), results in $OUT/results:"
    echo "   ${SUITE_CMD[*]}"
    "$LISTER" "$ROOT/benchmarks/gpu_plan.py" gpu-smoke | sed 's/^/     /'
    echo "3. its report (limit ${REPORT_LIMIT_S} s): ${REPORT_CMD[*]}"
    echo "expected time: at most $((TESTS_LIMIT_S + SUITE_LIMIT_S + REPORT_LIMIT_S)) s (the limits of the three steps)"
    missing="$(missing_modules)"
    [ -z "$missing" ] || echo "this machine lacks: $missing (a GPU machine must have them, or wheels in $WHEELHOUSE)"
    exit 0
fi

missing="$(missing_modules)"
if [ -n "$missing" ]; then
    echo "gpu_check: installing $missing from $WHEELHOUSE (no network)"
    if ! "$PYTHON" -m pip install -q --no-index --find-links "$WHEELHOUSE" --target "$DEPS" $missing; then
        echo "gpu_check: cannot run without: $missing. Put their wheels for this Python in $WHEELHOUSE" \
             "(pip download NAME --only-binary=:all: -d $WHEELHOUSE on a networked machine), or pass --wheelhouse DIR." >&2
        exit 1
    fi
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device here; use --dry-run on a CPU machine')" || exit 1
"$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

failed=()
step() {  # step NAME LIMIT_S COMMAND...
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit} s)"
    (cd "$ROOT" && timeout --signal=INT --kill-after=15 "$limit" "$@")
    local status=$?
    echo "== $name: exit $status after $((SECONDS - start)) s"
    [ "$status" = 0 ] || failed+=("$name (exit $status)")
}
step "cuda tests" "$TESTS_LIMIT_S" "${PYTEST_CMD[@]}"
step "gpu-smoke suite" "$SUITE_LIMIT_S" "${SUITE_CMD[@]}"
step "report" "$REPORT_LIMIT_S" "${REPORT_CMD[@]}"
echo "results: $OUT/results  report: $OUT/gpu-smoke.html  tests: $OUT/cuda-tests.xml"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: failed: ${failed[*]}" >&2
    exit 1
fi
echo "gpu_check: every step passed"
