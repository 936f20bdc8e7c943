#!/usr/bin/env bash
# The whole test suite, serially, on a GPU machine (and, as a dry run, anywhere).
#
#   OUT=/some/folder bash scripts/gpu_suite.sh     # OUT defaults to ./gpu-suite-out; LIMIT_S to 300
#
# Expects python3 with torch (a CUDA build on the GPU machine), onnx, onnxruntime, opencv-python-headless,
# typer, rich, psutil, matplotlib, pytest and, for the NVML test, nvidia-ml-py. Wheels the machine lacks
# (pure Python: e.g. pydicom, onnxslim) may be put in .whl/; they are installed into /tmp/site, never
# into the system. Writes $OUT/gpu_suite.log (pytest's own output with the 25 slowest tests),
# $OUT/gpu_env.txt (what was there) and $OUT/gpu_suite.rc (pytest's exit status).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-suite-out}"
LIMIT_S="${LIMIT_S:-300}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg

{
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4 | sed 's/^/gpu: /'
    else
        echo "gpu: no nvidia-smi here"
    fi
    "$PY" - <<'PYEOF'
import importlib, sys
print("python:", sys.version.split()[0])
for name in ("torch", "numpy", "onnx", "onnxruntime", "cv2", "typer", "rich", "psutil", "matplotlib", "pytest",
             "pynvml", "onnxslim", "openvino", "pydicom", "tensorrt", "pycuda"):
    try:
        mod = importlib.import_module(name)
        print(f"{name}: {getattr(mod, '__version__', 'present')}")
    except Exception as exc:
        print(f"{name}: absent ({type(exc).__name__})")
try:
    import torch
    print("torch cuda:", torch.version.cuda, "available:", torch.cuda.is_available(),
          "devices:", torch.cuda.device_count())
    import onnxruntime as ort
    print("onnxruntime providers:", ort.get_available_providers())
except Exception as exc:
    print("probe failed:", exc)
PYEOF
} > "$OUT/gpu_env.txt" 2>&1
cat "$OUT/gpu_env.txt"

start=$(date +%s)
# PYTEST_ARGS (default: none, i.e. the whole suite) narrows a dry run, e.g. PYTEST_ARGS=tests/test_gpu.py
# shellcheck disable=SC2086
timeout --kill-after=10 "$LIMIT_S" "$PY" -m pytest -q -p no:cacheprovider --durations=25 -rs ${PYTEST_ARGS:-} \
    > "$OUT/gpu_suite.log" 2>&1
rc=$?
echo "$rc" > "$OUT/gpu_suite.rc"
tail -n 40 "$OUT/gpu_suite.log"
echo "pytest exit status $rc after $(( $(date +%s) - start )) s (124: stopped at the ${LIMIT_S} s limit)" \
    | tee -a "$OUT/gpu_suite.log"
exit "$rc"
