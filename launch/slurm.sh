#!/usr/bin/env bash
# SLURM: one process per GPU across NODES nodes; JAX detects SLURM and joins the processes.
#
#   launch/slurm.sh NODES GPUS_PER_NODE WORKDIR [ferjax flags...]
#   DRY_RUN=1 launch/slurm.sh 2 8 /shared/runs/r18 --config=configs/resnet.py   # print only
#
# WORKDIR must be on a file system every node reaches (or gs://... through Orbax). Extra
# sbatch options: SBATCH_EXTRA="--partition=gpu --time=24:00:00 --account=abc".
set -euo pipefail
nodes="${1:?usage: launch/slurm.sh NODES GPUS_PER_NODE WORKDIR [ferjax flags...]}"
gpus="${2:?GPUS_PER_NODE}"
workdir="${3:?WORKDIR}"
shift 3
python="${PYTHON:-python}"
script=$(cat <<SBATCH
#!/usr/bin/env bash
#SBATCH --job-name=ferjax
#SBATCH --nodes=${nodes}
#SBATCH --ntasks-per-node=${gpus}
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=${CPUS_PER_TASK:-8}
#SBATCH --output=${workdir}/slurm-%j.out
#SBATCH --requeue
#SBATCH --signal=TERM@120
# --requeue + --signal: on preemption ferjax gets SIGTERM, checkpoints and exits 75; the
# requeued job resumes from the workdir.
srun --kill-on-bad-exit=1 ${python} -m ferjax.main --workdir=${workdir} $*
SBATCH
)
if [[ -n "${DRY_RUN:-}" ]]; then
  echo "sbatch ${SBATCH_EXTRA:-} <<'EOF'"
  echo "${script}"
  echo "EOF"
else
  mkdir -p "${workdir}"
  # shellcheck disable=SC2086
  echo "${script}" | sbatch ${SBATCH_EXTRA:-}
fi
