#!/usr/bin/env bash
# Plain sbatch alternative to `jepa launch`: one torchrun per node, rendezvous on the first node.
# Usage: sbatch [--nodes N] slurm/sbatch_torchrun.sh CONFIG [key=value ...]
#SBATCH --job-name=jepa
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=80
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --output=%x-%j.out
set -euo pipefail

config="$1"; shift
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# SIGTERM reaches torchrun, which forwards it to the ranks: they agree on a step, checkpoint and stop
# (exit code 130); resubmit with the same run_dir to resume. `jepa launch` requeues automatically.
srun --kill-on-bad-exit=1 torchrun \
  --nnodes "$SLURM_NNODES" --nproc_per_node "$SLURM_GPUS_ON_NODE" \
  --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:29500" \
  -m jepa train --config "$config" "run_dir=runs/$SLURM_JOB_NAME-$SLURM_JOB_ID" "$@"
