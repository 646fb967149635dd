#!/usr/bin/env bash
# ddpmkit's one prepared check for a GPU machine (about 5-7 minutes on an H100): what the card
# and its software are, the tests that take the `device` fixture run on CUDA (host syncs inside
# sampling loops fail there: tests/conftest.py's sync_guard), then benchmarks/gpu_bench.py
# (training and sampling throughput against diffusers, fp16 + GradScaler, sync check, profile).
# Everything printed is also written to $OUT/gpu_check.log; the results to $OUT/results.{json,md}
# and the test report to $OUT/tests.xml.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh                    # on the GPU machine
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh --device cpu --quick   # here: everything, tiny, < 1 min
#
# The device machine has no network: nothing is installed here. It must already hold torch and
# ddpmkit's dependencies (numpy, scipy, safetensors, tqdm, Pillow, matplotlib, scikit-learn, and
# pytest + hypothesis for the tests); diffusers (and its importlib_metadata) is not in that image,
# so a session carries it as wheels (see /work/.library/device/README.md, notes on `.whl`) and
# starts its command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# A missing module is named below in one line, and the script ends with status 3 before the bench.
# Python: $PYTHON if set, else .venv/bin/python if it imports torch, else python3.
# Time limits (seconds): TEST_TIMEOUT (whole test step, default 240), PER_TEST_TIMEOUT (120, with
# pytest-timeout), BENCH_TIMEOUT (420).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

DEVICE=cuda
QUICK=()
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
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
               "diffusers", "ddpmkit"):
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
    "$PYTHON" -c "import pytest_timeout" 2>/dev/null && timeout_opt=(--timeout "${PER_TEST_TIMEOUT:-120}")
    DDPMKIT_GPU_CHECK=1 timeout "${TEST_TIMEOUT:-240}" "$PYTHON" -m pytest -p no:cacheprovider -q -rfEs \
        --device "$DEVICE" -m device "${timeout_opt[@]}" --junitxml "$OUT/tests.xml" "${tests[@]}"
    rc=$?
    case $rc in
        0) echo "tests: passed" ;;
        5) echo "tests: none take the device fixture yet (pytest status 5)" ;;
        124) echo "tests: TIMED OUT after ${TEST_TIMEOUT:-240} s"; status=1 ;;
        *) echo "tests: FAILED (pytest status $rc)"; status=1 ;;
    esac

    echo "== gpu_bench.py on $DEVICE"
    timeout "${BENCH_TIMEOUT:-420}" "$PYTHON" benchmarks/gpu_bench.py --device "$DEVICE" "${QUICK[@]}" --out "$OUT"
    rc=$?
    if [ $rc -eq 0 ]; then echo "bench: done, $OUT/results.md"
    else echo "bench: FAILED or timed out (status $rc); the parts finished are in $OUT/results.json"; status=1; fi
    return $status
}

run_all 2>&1 | tee "$OUT/gpu_check.log"
status=$?
echo "gpu_check.sh: exit status $status" | tee -a "$OUT/gpu_check.log"
exit $status
