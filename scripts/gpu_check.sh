#!/usr/bin/env bash
# GPU checks and benchmark for a session that is lent a GPU machine (see docs/benchmarks.md, "GPU").
#
#   bash scripts/gpu_check.sh fetch   # HERE, with internet: wheels the GPU machine lacks -> .whl/ (ignored)
#   bash scripts/gpu_check.sh         # THERE (device tool: carry [".whl"]): install, pytest -m gpu, benchmark
#
# The GPU machine has Python 3.12 with torch, torchvision, onnx and onnxruntime, but not open_clip_torch or
# its ftfy/wcwidth; nothing can be downloaded there. Results go to $OUT (default ./out/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-run}" == "fetch" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
    ls -la .whl
    exit 0
fi

OUT="${OUT:-$PWD/out/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python3 -c 'import torch, onnxruntime as ort; print("torch", torch.__version__, "cuda", torch.version.cuda,
        torch.cuda.get_device_name(0)); print("onnxruntime", ort.__version__, ort.get_available_providers())'
    lscpu | grep -m1 'Model name' || true
} 2>&1 | tee "$OUT/machine.txt"

status=0
# 1. Correctness on the GPU: graph replay == eager, fp16/bf16 ~ fp32, OOM -> InferenceResourceError, ORT CUDA.
python3 -m pytest -p no:cacheprovider -m gpu -q -rs test/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt" || status=1

# 2. The benchmark at the issue's setting (ViT-B/16, short side 448, single pass) and at 224; random weights
#    (the speed does not depend on them). fp32/fp16/bf16 with CUDA graphs, next to the naive baseline.
python3 -m zeroseg_ros.bench --random-weights --device cuda --precisions fp32,fp16,bf16 --methods naclip,maskclip \
    --sizes 640x480,1280x720 --short-side 448 --iterations 200 --warmup 20 --naive-iterations 5 \
    --json "$OUT/bench_gpu_448.json" --plot "$OUT/latency_gpu_448.png" 2>&1 | tee "$OUT/bench_gpu_448.txt" || status=1
python3 -m zeroseg_ros.bench --random-weights --device cuda --precisions fp16 --methods naclip \
    --sizes 320x240,640x480,1280x720,1920x1080 --short-side 224 --iterations 200 --warmup 20 --no-naive \
    --json "$OUT/bench_gpu_224.json" 2>&1 | tee "$OUT/bench_gpu_224.txt" || status=1
echo "exit status $status" | tee -a "$OUT/machine.txt"
exit $status
