#!/usr/bin/env bash
# Example `jepa launch` commands (see slurm/README.md). Edit partition/account/paths for your cluster.
set -euo pipefail

case "${1:-help}" in
  ijepa-h14)  # paper recipe: 2 nodes x 8 GPUs, global batch 2048
    jepa launch --config configs/ijepa/vit_h14_imagenet.yaml --nodes 2 --gpus-per-node 8 \
      --partition gpu --account "${ACCOUNT:?set ACCOUNT}" --time 3-00:00:00 --mem 480G --cpus-per-task 10 \
      --job-name ijepa-h14 data.source="${IMAGENET:?set IMAGENET}" data.num_workers=8 optim.accum_steps=8 \
      run_dir=runs/ijepa-h14 ;;
  ijepa-b16)  # one node of 8 GPUs
    jepa launch --config configs/ijepa/vit_b16_imagenet.yaml --gpus-per-node 8 --partition gpu \
      --time 2-00:00:00 --mem 240G --cpus-per-task 10 --job-name ijepa-b16 \
      data.source="${IMAGENET:?set IMAGENET}" data.num_workers=8 run_dir=runs/ijepa-b16 ;;
  vjepa-l16)  # video from webdataset shards, 4 nodes x 8 GPUs
    jepa launch --config configs/vjepa/vit_l16.yaml --nodes 4 --gpus-per-node 8 --partition gpu \
      --time 3-00:00:00 --mem 480G --cpus-per-task 10 --job-name vjepa-l16 \
      data.source="${SHARDS:?set SHARDS}" data.num_workers=8 run_dir=runs/vjepa-l16 ;;
  local)  # no cluster: two CPU processes here, same code path
    jepa launch --cluster local --tasks-per-node 2 train.steps=200 train.threads=1 run_dir=runs/local-2proc ;;
  *) echo "usage: $0 ijepa-h14|ijepa-b16|vjepa-l16|local" >&2; exit 2 ;;
esac
