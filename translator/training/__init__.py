"""What every trainer here shares: optimizers from config, orbax checkpoints with auto-resume, metric
writers (JSONL + TensorBoard, process 0 only) and progress reporting."""
