#!/usr/bin/env bash
# Runs N copies of a command on this machine as one multi-process JAX job over loopback (the multi-host
# code path without a pod). Each process gets DEVICES_PER_PROCESS CPU devices.
#
#   bash launch/local_processes.sh 2 "python -m experiments.demo --config configs/demo.py --workdir /tmp/d"
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 NUM_PROCESSES COMMAND" >&2
  exit 2
fi
num=$1 cmd=$2
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < num; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}" \
    TRANSLATOR_NUM_PROCESSES=$num TRANSLATOR_PROCESS_ID=$i JAX_COORDINATOR_ADDRESS=127.0.0.1:$port \
    bash -c "$cmd" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
