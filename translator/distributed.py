"""Joining the processes of a multi-host job (TPU pod, or several local processes in tests).

  TRANSLATOR_DISTRIBUTED=auto                  TPU pods: JAX finds coordinator, process count and id itself
  TRANSLATOR_NUM_PROCESSES=N TRANSLATOR_PROCESS_ID=i JAX_COORDINATOR_ADDRESS=host:port
                                               explicit (launch/local_processes.sh)
Nothing set: a single process; `initialize` does nothing.
"""

import os

import jax


def initialize() -> None:
  """Calls `jax.distributed.initialize` when the environment asks for a multi-process job."""
  num = os.environ.get("TRANSLATOR_NUM_PROCESSES")
  if num:
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
      raise ValueError("TRANSLATOR_NUM_PROCESSES is set but JAX_COORDINATOR_ADDRESS (host:port) is not")
    jax.distributed.initialize(address, int(num), int(os.environ["TRANSLATOR_PROCESS_ID"]))
  elif os.environ.get("TRANSLATOR_DISTRIBUTED") == "auto":
    jax.distributed.initialize()
