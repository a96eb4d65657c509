#!/usr/bin/env bash
# Runs one command on every worker of a TPU pod slice, after copying this repo there and installing it.
#
#   bash launch/tpu_pod.sh TPU_NAME ZONE "python -m experiments.demo --config configs/demo.py --workdir gs://B/d"
#
# Every worker runs the same program; TRANSLATOR_DISTRIBUTED=auto makes `translator.distributed.initialize`
# join them through `jax.distributed` (coordinator and process ids come from the TPU metadata).
# Checkpoints you load must be readable from every worker (a copy on each VM, or a mounted bucket).
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 TPU_NAME ZONE COMMAND" >&2
  exit 2
fi
name=$1 zone=$2 cmd=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
tar -C "$repo" --exclude=.git --exclude='workdir*' -czf /tmp/translator.tgz .
gcloud compute tpus tpu-vm scp /tmp/translator.tgz "$name":/tmp/translator.tgz --zone "$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "
  set -e; mkdir -p ~/translator && tar -C ~/translator -xzf /tmp/translator.tgz && cd ~/translator
  python3 -m pip install -q -e '.[tpu]'
  TRANSLATOR_DISTRIBUTED=auto $cmd"
