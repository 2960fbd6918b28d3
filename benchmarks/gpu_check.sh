#!/usr/bin/env bash
# The GPU paths in one run (under 8 minutes on one GPU): run it whenever a GPU is at hand
# and put its table in docs/research/benchmarks.md.
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. pytest -m gpu: bf16/fp16 encode against fp32, SDPA and eager attention, a training
#    step per objective in bf16 (tests/gpu);
# 2. the rehearsal of paper.yaml on the GPU (tiny backbones of the same families);
# 3. --estimate --measure of paper.yaml: each stage at full width, 1 and 2 layers,
#    extrapolated to full depth (peak memory, time per forward, hours per stage).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/gpu.txt" 2>/dev/null || echo "no nvidia-smi" > "$out/gpu.txt"
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3" >> "$out/table.md"; }
printf '| check | result | seconds |\n|---|---|---|\n' > "$out/table.md"

start=$SECONDS
HF_HUB_OFFLINE=1 .venv/bin/pytest -q -m gpu tests/gpu > "$out/pytest-gpu.log" 2>&1
rc=$?
row "pytest -m gpu" "$(tail -1 "$out/pytest-gpu.log") (exit $rc)" $((SECONDS - start))

start=$SECONDS
.venv/bin/lusifer train src/lusifer/configs/paper.yaml --rehearse --output "$out/rehearsal" > "$out/rehearsal.log" 2>&1
rc=$?
row "rehearsal of paper.yaml on the GPU" "exit $rc ($out/rehearsal/rehearsal.json)" $((SECONDS - start))

start=$SECONDS
.venv/bin/lusifer train src/lusifer/configs/paper.yaml --estimate --measure --gpus 1 --gpu-memory 80 --output "$out/estimate" > "$out/estimate.log" 2>&1
rc=$?
row "--estimate --measure of paper.yaml (1 GPU)" "exit $rc ($out/estimate/estimate.md)" $((SECONDS - start))

echo "GPU: $(cat "$out/gpu.txt")"
cat "$out/table.md"
[ -f "$out/estimate/estimate.md" ] && cat "$out/estimate/estimate.md"
