#!/usr/bin/env bash
# Runs N ferjax processes on this machine, joined by JAX's distributed runtime over loopback
# (CPU collectives: gloo). Each process sees DEVICES_PER_PROCESS forced CPU devices.
#
#   launch/local.sh N python -m ferjax.main --config=configs/demo.py --workdir=runs/mp
#   DRY_RUN=1 launch/local.sh 2 python -m ferjax.main ...   # print the commands only
#
# The same command line runs on a real cluster through launch/slurm.sbatch or launch/k8s.
set -euo pipefail
n="${1:?usage: launch/local.sh NUM_PROCESSES COMMAND...}"
shift
port="${PORT:-$((20000 + RANDOM % 20000))}"
devices="${DEVICES_PER_PROCESS:-1}"
pids=()
for ((i = 0; i < n; i++)); do
  env_line=(JAX_COORDINATOR_ADDRESS="127.0.0.1:${port}" JAX_NUM_PROCESSES="${n}" JAX_PROCESS_ID="${i}"
            JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${devices}")
  if [[ -n "${DRY_RUN:-}" ]]; then
    echo "env ${env_line[*]} $*"
    continue
  fi
  env "${env_line[@]}" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "${pid}" || status=$?
done
exit "${status}"
