#!/usr/bin/env bash
# Kubernetes / GKE: a JobSet with one pod per host; each pod runs one ferjax process that sees
# all GPUS_PER_HOST GPUs. Process ids come from the Indexed Job completion index; process 0's
# stable DNS name (JobSet's headless service) is the coordinator.
#
#   launch/k8s.sh NAME IMAGE HOSTS GPUS_PER_HOST WORKDIR [ferjax flags...]
#   DRY_RUN=1 launch/k8s.sh fer us-docker.pkg.dev/p/r/ferjax:latest 2 8 gs://b/runs/r18 \
#       --config=configs/resnet.py          # print the manifest only
# Requires the JobSet controller (https://jobset.sigs.k8s.io).
set -euo pipefail
name="${1:?usage: launch/k8s.sh NAME IMAGE HOSTS GPUS_PER_HOST WORKDIR [flags...]}"
image="${2:?IMAGE}"; hosts="${3:?HOSTS}"; gpus="${4:?GPUS_PER_HOST}"; workdir="${5:?WORKDIR}"
shift 5
args=""
for a in "--workdir=${workdir}" "$@"; do args+="              - \"${a}\""$'\n'; done
manifest=$(cat <<YAML
apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata:
  name: ${name}
spec:
  failurePolicy:
    maxRestarts: 3
  replicatedJobs:
  - name: workers
    replicas: 1
    template:
      spec:
        parallelism: ${hosts}
        completions: ${hosts}
        completionMode: Indexed
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
            subdomain: ${name}
            terminationGracePeriodSeconds: 120
            containers:
            - name: ferjax
              image: ${image}
              command: ["python", "-m", "ferjax.main"]
              args:
${args%$'\n'}
              env:
              - name: JAX_COORDINATOR_ADDRESS
                value: "${name}-workers-0-0.${name}:12345"
              - name: JAX_NUM_PROCESSES
                value: "${hosts}"
              - name: JAX_PROCESS_ID
                valueFrom:
                  fieldRef:
                    fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
              ports:
              - containerPort: 12345
              resources:
                limits:
                  nvidia.com/gpu: ${gpus}
YAML
)
if [[ -n "${DRY_RUN:-}" ]]; then
  echo "${manifest}"
else
  echo "${manifest}" | kubectl apply -f -
fi
