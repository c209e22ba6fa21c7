#!/usr/bin/env bash
# GPU checks and benchmarks, run on a machine with an NVIDIA GPU (see docs/benchmarks.md, "GPU").
#
#   bash scripts/gpu_check.sh fetch       # with internet: wheels the GPU machine lacks -> .whl/ (ignored)
#   bash scripts/gpu_check.sh             # on the GPU machine (.whl/ copied there): install, pytest -m gpu, benchmarks
#   bash scripts/gpu_check.sh ros-check   # either machine: install the ROS 2 wheels of .whl/ros, one pub/sub round trip
#
# The GPU machine has Python 3.12 with torch, torchvision, onnx and onnxruntime, but not open_clip_torch (nor its
# ftfy/wcwidth) and no ROS 2; nothing can be downloaded there. The ROS 2 runtime (requirements/ros-runtime.txt,
# about 45 MB of cp312 wheels) travels too, so the node's end-to-end benchmark runs there. Results go to $OUT
# (default ./out/gpu). FETCH_PYTHON_VERSION (3.12) and PYTHON (python3) choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

fetch() {
    local version="${FETCH_PYTHON_VERSION:-3.12}"
    local platform=(--only-binary=:all: --python-version "$version" --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl/ros
    python3 -m pip download -q --no-deps "${platform[@]}" -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
    # zeroseg label: rosbags (requirements/label.txt) and what it needs
    python3 -m pip download -q --no-deps "${platform[@]}" -d .whl rosbags==0.11.9 ruamel.yaml==0.19.1 lz4==4.4.5 \
        backports.zstd==1.8.0 apsw==3.54.1.0
    python3 -m pip download -q --no-deps "${platform[@]}" -d .whl/ros -r requirements/ros-runtime.txt
    du -sh .whl .whl/ros
}

# rclpy from the wheels of .whl/ros, installed under a prefix, with the paths that the wheels' own bootstrapper
# (a .pth file, which a PYTHONPATH folder does not run) would set: libraries, the ament index, the packages.
ros_env() {
    compgen -G ".whl/ros/*.whl" > /dev/null || { echo "no ROS 2 wheels in .whl/ros (run: gpu_check.sh fetch)"; return 1; }
    local prefix=/tmp/zeroseg-ros site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix "$prefix" .whl/ros/*.whl
    site="$("$PYTHON" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')"
    site="$prefix/$site"
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$site" AMENT_PREFIX_PATH="$prefix" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
    export LD_LIBRARY_PATH="$prefix/lib:$prefix/lib64:$(ls -d "$site"/ros_*.libs | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export RMW_IMPLEMENTATION=rmw_fastrtps_cpp ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
    export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}"
}

ros_round_trip() {
    timeout 60 "$PYTHON" - <<'EOF'
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

rclpy.init()
node = rclpy.create_node("zeroseg_gpu_check")
qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
received = []
node.create_subscription(Image, "gpu_check", received.append, qos)
publisher = node.create_publisher(Image, "gpu_check", qos)
time.sleep(0.5)
for _ in range(3):
    publisher.publish(Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(921600)))
deadline = time.monotonic() + 10.0
while len(received) < 3 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(f"ROS 2 round trip: {len(received)} of 3 frames ({rclpy.__file__})")
node.destroy_node()
rclpy.shutdown()
raise SystemExit(0 if len(received) == 3 else 1)
EOF
}

# Whether Fast DDS's shared memory works with the large-frames profile (a sandbox may not offer it; Fast DDS
# then cannot create a participant that names the transport).
large_frames_profile_works() {
    FASTDDS_DEFAULT_PROFILES_FILE="$PWD/config/fastdds_large_frames.xml" ros_round_trip
}

case "${1:-run}" in
    fetch) fetch; exit 0 ;;
    ros-check) ros_env && ros_round_trip && large_frames_profile_works; exit $? ;;
    run) ;;
    *) echo "usage: $0 [fetch|ros-check|run]" >&2; exit 2 ;;
esac

# Results: one log, the JSON reports and one plot.
OUT="${OUT:-$PWD/out/gpu}"
LOG="$OUT/log.txt"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PYTHON" -c 'import torch, onnxruntime as ort; print("torch", torch.__version__, "cuda", torch.version.cuda,
        torch.cuda.get_device_name(0)); print("onnxruntime", ort.__version__, ort.get_available_providers())'
    lscpu | grep -m1 'Model name' || true
} 2>&1 | tee -a "$LOG"

status=0
# 1. Correctness on the GPU: graph replay == eager, fp16/bf16 ~ fp32, OOM -> InferenceResourceError, ORT CUDA.
"$PYTHON" -m pytest -p no:cacheprovider -m gpu -q -rs test/test_gpu.py 2>&1 | tee -a "$LOG" || status=1

# 2. The benchmark at the issue's setting (ViT-B/16, short side 448, single pass) and at 224; random weights
#    (the speed does not depend on them). fp32/fp16/bf16 with CUDA graphs, next to the naive baseline.
"$PYTHON" -m zeroseg_ros.tools.bench --random-weights --device cuda --precisions fp32,fp16,bf16 --methods naclip,scclip,maskclip \
    --sizes 640x480,1280x720 --short-side 448 --iterations 200 --warmup 20 --naive-iterations 5 \
    --json "$OUT/bench_gpu_448.json" --plot "$OUT/latency_gpu_448.png" 2>&1 | tee -a "$LOG" || status=1
"$PYTHON" -m zeroseg_ros.tools.bench --random-weights --device cuda --precisions fp16 --methods naclip,scclip \
    --sizes 320x240,640x480,1280x720,1920x1080 --short-side 224 --iterations 200 --warmup 20 --no-naive \
    --json "$OUT/bench_gpu_224.json" 2>&1 | tee -a "$LOG" || status=1

# 2b. Several cameras, one model: batches of 1, 2, 4, 6, 8 frames of 640x480 at short side 448, fp16 (CUDA graphs
#     per batch size): frames/s per batch size and each camera's latency p50/p95 (goal: batch 6 >= 1.6 x the
#     frames/s of single frames).
"$PYTHON" -m zeroseg_ros.tools.bench --batches 1,2,4,6,8 --random-weights --device cuda --precision fp16 \
    --sizes 640x480 --short-side 448 --iterations 100 --warmup 10 --no-naive \
    --json "$OUT/bench_gpu_batches.json" 2>&1 | tee -a "$LOG" || status=1

# 3. The node end to end (publisher -> node -> subscriber, 640x480 frames) at the issue's setting.
if ros_env && ros_round_trip 2>&1 | tee -a "$LOG"; then
    transport=()  # best-effort frames as a camera sends them, through the large-frames profile
    if ! large_frames_profile_works >> "$LOG" 2>&1; then
        echo "no shared-memory transport here: the node benchmark runs reliable with Fast DDS's defaults" | tee -a "$LOG"
        transport=(--fastdds-profile none --reliable)
    fi
    for rate in 100 250; do
        if ! "$PYTHON" -m zeroseg_ros.tools.bench --ros --random-weights --device cuda --precision fp16 --short-side 448 \
            --rate "$rate" --duration 10 "${transport[@]}" --json "$OUT/bench_ros_gpu_${rate}hz.json" >> "$LOG" 2>&1; then
            status=1
            tail -40 /tmp/zeroseg_bench_node.log >> "$LOG"
        fi
    done
    # One node, four cameras at 30 Hz each (the runs above are one camera): frames/s in total and per camera.
    if ! "$PYTHON" -m zeroseg_ros.tools.bench --ros --random-weights --device cuda --precision fp16 --short-side 448 \
        --cameras 4 --rate 30 --duration 10 "${transport[@]}" --json "$OUT/bench_ros_gpu_4cam.json" >> "$LOG" 2>&1; then
        status=1
        tail -40 /tmp/zeroseg_bench_node.log >> "$LOG"
    fi
else
    echo "ROS 2 wheels missing or not working: node end-to-end benchmark skipped" | tee -a "$LOG"
    status=1
fi

# 4. zeroseg label on a bag of 640x480 frames at the issue's setting: short side 448, fp16, batches of 8.
if PYTHONPATH="$PYTHONPATH:$PWD/test" "$PYTHON" -c 'from pathlib import Path; from bag_helpers import make_bag
make_bag(Path("/tmp/zeroseg-bag640"), frames=400, size=(480, 640), compressed=False)' >> "$LOG" 2>&1; then
    "$PYTHON" -m zeroseg_ros.tools.cli label /tmp/zeroseg-bag640 --out /tmp/zeroseg-labelled --overwrite \
        --queries "person, car, bicycle, traffic cone, road, building, tree, sky" --random-weights --device cuda \
        --precision fp16 --short-side 448 --batch-size 8 2>&1 | tr '\r' '\n' | grep -v "frame/s]" | tee -a "$LOG" || status=1
else
    echo "rosbags missing (run: gpu_check.sh fetch): label benchmark skipped" | tee -a "$LOG"
    status=1
fi
echo "exit status $status" | tee -a "$LOG"
exit $status
