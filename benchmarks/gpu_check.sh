#!/usr/bin/env bash
# ddpmkit's one prepared check for a GPU machine (at most about 7.5 minutes, by its time limits): what the card
# and its software are, the tests that take the `device` fixture run on CUDA (host syncs inside
# sampling loops fail there: tests/conftest.py's sync_guard), then benchmarks/gpu_bench.py
# (training and sampling throughput against diffusers, fp16 + GradScaler, sync check, profile).
# Everything printed is also written to $OUT/gpu_check.log; the results to $OUT/results.{json,md}
# and the test report to $OUT/tests.xml.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh                    # on the GPU machine
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh --device cpu --quick   # here: everything, tiny, < 1 min
#
# The device machine has no network: nothing is downloaded. It must already hold torch and
# ddpmkit's dependencies (numpy, scipy, safetensors, tqdm, Pillow, matplotlib, scikit-learn, and
# pytest + hypothesis for the tests), as its image does; diffusers is not in that image. A session
# carries it as wheels in .whl/ (see /work/.library/device/README.md, the notes on `.whl`), here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 zipp==4.1.2 torchdiffeq==0.2.5
# and names .whl in the device tool's carry: when diffusers does not import, this script installs
# $WHEELS/*.whl (default .whl) with pip --no-index into /tmp/ddpmkit-site and puts it on PYTHONPATH.
# A module still missing is named in one line, and the script ends with status 3 before the tests.
# Python: $PYTHON if set, else .venv/bin/python if it imports torch, else python3.
# Time limits (seconds): TEST_TIMEOUT (the whole test step, default 120), PER_TEST_TIMEOUT (60,
# where pytest-timeout is installed), BENCH_TIMEOUT (330; gpu_bench writes its results after each
# part, so a run cut short keeps the parts it finished).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

DEVICE=cuda
QUICK=()
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:-}"; shift 2 || { usage; exit 2; } ;;
        --device=*) DEVICE="${1#--device=}"; shift ;;
        --quick) QUICK=(--quick); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac

OUT="${OUT:-benchmarks/out/gpu_check}"
mkdir -p "$OUT" || exit 2
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PYTHON=.venv/bin/python
    else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

WHEELS="${WHEELS:-.whl}"
: > "$OUT/gpu_check.log"
if ! "$PYTHON" -c "import diffusers, torchdiffeq" 2>/dev/null && compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "== installing the carried wheels: $(cd "$WHEELS" && echo *.whl)" | tee -a "$OUT/gpu_check.log"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/ddpmkit-site "$WHEELS"/*.whl 2>&1 | tee -a "$OUT/gpu_check.log"
    export PYTHONPATH="/tmp/ddpmkit-site:$PYTHONPATH"
fi

run_all() {
    local status=0 rc
    echo "== ddpmkit gpu_check: device $DEVICE ${QUICK[*]:-}, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "== machine"
    if [ "$DEVICE" = cuda ]; then
        nvidia-smi || echo "nvidia-smi: not available"
    else
        echo "cpu run: nvidia-smi skipped ($(nproc) cores)"
    fi
    "$PYTHON" - "$DEVICE" <<'EOF' || return 3
import importlib, sys
import torch
print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
missing = []
for module in ("numpy", "scipy", "safetensors", "tqdm", "PIL", "matplotlib", "sklearn", "pytest", "hypothesis",
               "torchdiffeq", "diffusers", "ddpmkit"):
    try:
        print(f"  {module} {getattr(importlib.import_module(module), '__version__', '?')}")
    except Exception as exc:  # an ImportError, or a dependency's own failure at import
        missing.append(module)
        print(f"  MISSING {module}: {type(exc).__name__}: {exc}")
if missing:
    print(f"gpu_check.sh: cannot run without {', '.join(missing)}: the device machine has no network; carry "
          "wheels (.whl in carry, pip install --no-index --target /tmp/site, PYTHONPATH) - see this script's header")
    sys.exit(3)
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    print("gpu_check.sh: --device cuda, but torch.cuda.is_available() is False")
    sys.exit(3)
EOF

    echo "== tests on $DEVICE (those that take the device fixture: -m device)"
    local tests=(tests) timeout_opt=()
    [ ${#QUICK[@]} -gt 0 ] && tests=(tests/test_gpu_check.py)   # --quick: this file's device tests only
    "$PYTHON" -c "import pytest_timeout" 2>/dev/null && timeout_opt=(--timeout "${PER_TEST_TIMEOUT:-60}")
    DDPMKIT_GPU_CHECK=1 timeout "${TEST_TIMEOUT:-120}" "$PYTHON" -m pytest -p no:cacheprovider -q -rfEs \
        --device "$DEVICE" -m device "${timeout_opt[@]}" --junitxml "$OUT/tests.xml" "${tests[@]}"
    rc=$?
    case $rc in
        0) echo "tests: passed" ;;
        5) echo "tests: none take the device fixture yet (pytest status 5)" ;;
        124) echo "tests: TIMED OUT after ${TEST_TIMEOUT:-120} s"; status=1 ;;
        *) echo "tests: FAILED (pytest status $rc)"; status=1 ;;
    esac

    echo "== gpu_bench.py on $DEVICE"
    timeout "${BENCH_TIMEOUT:-330}" "$PYTHON" benchmarks/gpu_bench.py --device "$DEVICE" "${QUICK[@]}" --out "$OUT"
    rc=$?
    if [ $rc -eq 0 ]; then echo "bench: done, $OUT/results.md"
    else echo "bench: FAILED or timed out (status $rc); the parts finished are in $OUT/results.json"; status=1; fi
    return $status
}

run_all 2>&1 | tee -a "$OUT/gpu_check.log"
status=$?
echo "gpu_check.sh: exit status $status" | tee -a "$OUT/gpu_check.log"
exit $status
