#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): the same command on every worker; JAX joins the
# hosts of a pod slice by itself.
#
#   launch/tpu_vm.sh TPU_NAME ZONE WORKDIR [ferjax flags...]
#   DRY_RUN=1 launch/tpu_vm.sh my-v4-32 us-central2-b gs://b/runs/r18 --config=configs/resnet.py
# WORKDIR should be a gs:// path (Orbax writes checkpoints there through TensorStore). ferjax
# must be installed on every worker (e.g. with the same gcloud command and "pip install ...").
set -euo pipefail
tpu="${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE WORKDIR [ferjax flags...]}"
zone="${2:?ZONE}"; workdir="${3:?WORKDIR}"
shift 3
remote="cd ${FERJAX_DIR:-ferjax} && python -m ferjax.main --workdir=${workdir} $*"
cmd=(gcloud compute tpus tpu-vm ssh "${tpu}" --zone="${zone}" --worker=all --command="${remote}")
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  "${cmd[@]}"
fi
