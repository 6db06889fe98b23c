#!/usr/bin/env bash
# The GPU check: on a machine with one NVIDIA GPU, installs ferjax with the CUDA extra (the tested
# versions, constraints.txt) in a fresh virtual environment and runs resnet18 and cnn at
# bfloat16, batch 512, 300 steps on procedural faces (python -m bench.gpu_step): images/s, MFU
# against the device's peak, step-time spread and whether the input path stalls the device.
# Then one FER2013-sized epoch of the demo CNN (28,709 procedural faces, command to report) and
# its wall-clock account (ferjax.runtime.clock: start, data, compile, steps, eval, ...): on a
# GPU the fixed costs weigh most. About 4-6 minutes including the install. Fails loudly, never
# falls back to the CPU.
#
#   bash bench/gpu_check.sh              # STEPS=300 BATCH=512 MODELS=resnet18,cnn by default
#   VENV=/path/to/venv bash bench/gpu_check.sh   # reuse an environment that has ferjax[cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "error: no NVIDIA GPU here (nvidia-smi finds none); this check needs one GPU" >&2
  exit 2
fi
nvidia-smi -L
start=$(date +%s)
if [[ -z "${VENV:-}" ]]; then
  VENV=.venv-gpu
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The CUDA wheels of the tested JAX version (jax[cuda12] brings the CUDA libraries).
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[cuda]"
fi
echo "install: $(( $(date +%s) - start )) s"
XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.8} \
  "$VENV/bin/python" -m bench.gpu_step --models "${MODELS:-resnet18,cnn}" \
  --batch "${BATCH:-512}" --steps "${STEPS:-300}" --dtype bfloat16
work=$(mktemp -d)
echo "one epoch, command to report (demo CNN, 28,709 procedural faces, batch 128):"
"$VENV/bin/python" -m ferjax.main --config=configs/demo.py --workdir="$work/run" \
  --config.train.num_epochs=1 --config.data.synthetic.num_train=28709 \
  --config.data.synthetic.num_val=3589 --config.data.synthetic.num_test=3589 \
  --config.sampling.method=none --config.train.compilation_cache_dir="$work/jax" | tail -3
"$VENV/bin/python" -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))" \
  "$work/run/time.json"
echo "total: $(( $(date +%s) - start )) s"
