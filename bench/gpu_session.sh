#!/usr/bin/env bash
# Everything to do on a GPU machine, in three stages that each fit one call of the device tool
# (10 minutes, logs under $OUT): build natively, run the gpu tests (also under compute-sanitizer)
# and the unit tests, then the benchmarks side by side with PyTorch. It records and never judges:
# every log and JSON line goes to $OUT; read them, then put the figures (with the command) in
# docs/performance.md and docs/cuda.md.
#
#   make gpu-carry                   # here, once: copies what the GPU machine lacks into .device/
#   bench/gpu_session.sh build       # on the GPU machine: configure + build (build-gpu/, kept between calls)
#   bench/gpu_session.sh test        # ctest -L gpu, ctest -L unit, compute-sanitizer memcheck
#   bench/gpu_session.sh bench       # moe bench train (tiny, moe-1b at bf16 and fp8) and torch_ref.py --compile
#
# .device/ (git-ignored; name it in the device tool's carry): torch_ref.py (../shared/bench) and,
# for machines without Debian's nlohmann-json3-dev, its headers and CMake config.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
BUILD=build-gpu
stage=${1:-}

run() {  # name command...: output to $OUT/name.log, exit status appended to $OUT/summary.txt
  local name=$1; shift
  local start=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc, $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
  return $rc
}

case "$stage" in
  build)
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    prefix=()
    [ -f /usr/include/nlohmann/json.hpp ] || [ ! -d .device/nlohmann ] || prefix=(-DCMAKE_PREFIX_PATH="$PWD/.device/nlohmann")
    generator=(); command -v ninja > /dev/null && generator=(-G Ninja)
    run configure cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 "${prefix[@]}" || exit 1
    run build cmake --build "$BUILD" -j "$(nproc)"
    ;;
  test)
    run ctest-gpu bash -c "cd $BUILD && ctest -L gpu --output-on-failure --timeout 300"
    run ctest-unit bash -c "cd $BUILD && ctest -L unit -j 8 --output-on-failure"
    for t in test_gpu_backend test_gpu_model test_gpu_fp8 test_gpu_fp8_rows test_gpu_ops test_gpu_moe; do
      [ -x "$BUILD/tests/$t" ] || continue
      run "memcheck-$t" compute-sanitizer --tool memcheck --error-exitcode 1 "$BUILD/tests/$t" --gtest_filter=-*Benchmark*
    done
    ;;
  bench)
    MOE=$BUILD/moe
    run bench-tiny "$MOE" bench train --config configs/tiny.yaml --device cuda --steps 20
    for p in bf16 fp8 fp32; do
      run "bench-moe-1b-$p" "$MOE" bench train --config configs/moe-1b.yaml --device cuda --steps 20 --warmup 3 \
        --set train.precision=$p
    done
    run bench-moe-1b-bf16-recompute "$MOE" bench train --config configs/moe-1b.yaml --device cuda --steps 20 \
      --warmup 3 --set train.precision=bf16 --set train.recompute=true
    # The same bf16 run on the GEMM path's attention: what cuDNN's fused attention gains.
    MOE_CUDNN_ATTENTION=0 run bench-moe-1b-bf16-gemm-attention "$MOE" bench train --config configs/moe-1b.yaml \
      --device cuda --steps 20 --warmup 3 --set train.precision=bf16
    if [ -f .device/torch_ref.py ]; then
      run torch-compile python3 .device/torch_ref.py --config moe-1b seed-135m --compile --steps 20
      run torch-eager python3 .device/torch_ref.py --config moe-1b --steps 20
    else
      echo "torch_ref: .device/torch_ref.py missing (make gpu-carry)" | tee -a "$OUT/summary.txt"
    fi
    grep -h '^{' "$OUT"/bench-*.log "$OUT"/torch-*.log > "$OUT/bench.jsonl" 2>/dev/null
    ;;
  *)
    echo "usage: bench/gpu_session.sh build|test|bench   (OUT=$OUT)" >&2
    exit 2
    ;;
esac
