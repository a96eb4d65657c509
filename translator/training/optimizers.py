"""optax optimizers and learning-rate schedules from an ml_collections config.

  optimizer.name: "adamw" | "adafactor" | "sgd"
  optimizer.multiply_by_parameter_scale (adafactor; default True; Lester et al.'s prompt tuning: False)
  optimizer.lr, optimizer.weight_decay, optimizer.b1, optimizer.b2, optimizer.clip_norm (0 = none)
  optimizer.schedule: "constant" | "cosine" | "linear";  optimizer.warmup_steps
"""

from __future__ import annotations

import optax


def schedule(cfg, total_steps: int) -> optax.Schedule:
  """Linear warm-up for `warmup_steps`, then constant, cosine or linear decay to 0 at `total_steps`."""
  lr, warmup = cfg.lr, cfg.get("warmup_steps", 0)
  kind = cfg.get("schedule", "constant")
  decay_steps = max(total_steps - warmup, 1)
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.get("final_lr_fraction", 0.0))
  elif kind == "linear":
    main = optax.linear_schedule(lr, lr * cfg.get("final_lr_fraction", 0.0), decay_steps)
  else:
    raise ValueError(f"optimizer.schedule {kind!r} is not one of constant, cosine, linear")
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make(cfg, total_steps: int) -> optax.GradientTransformation:
  """The optimizer named by `cfg.name`, with gradient clipping when `cfg.clip_norm` > 0."""
  lr = schedule(cfg, total_steps)
  name = cfg.name
  if name == "adamw":
    opt = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8),
                      weight_decay=cfg.get("weight_decay", 0.0))
  elif name == "adafactor":
    opt = optax.adafactor(lr, multiply_by_parameter_scale=cfg.get("multiply_by_parameter_scale", True),
                          weight_decay_rate=cfg.get("weight_decay", None) or None)
  elif name == "sgd":
    opt = optax.sgd(lr, momentum=cfg.get("momentum", None))
  else:
    raise ValueError(f"optimizer.name {name!r} is not one of adamw, adafactor, sgd")
  if cfg.get("clip_norm", 0.0):
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
  return opt
