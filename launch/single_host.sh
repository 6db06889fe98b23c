#!/usr/bin/env bash
# One machine with several GPUs: a single process drives all of them (the batch is sharded over
# every visible device). Pick GPUs with CUDA_VISIBLE_DEVICES.
#
#   launch/single_host.sh WORKDIR [ferjax flags...]
#   DRY_RUN=1 CUDA_VISIBLE_DEVICES=0,1,2,3 launch/single_host.sh runs/r18 --config=configs/resnet.py
set -euo pipefail
workdir="${1:?usage: launch/single_host.sh WORKDIR [ferjax flags...]}"
shift
cmd=(env XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
     "${PYTHON:-python}" -m ferjax.main --workdir="${workdir}" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all} ${cmd[*]}"
else
  "${cmd[@]}"
fi
