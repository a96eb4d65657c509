"""Joint prompt tuning: only the prompts of a step's tasks change (the LM never), per-task optimizer state, no
weight gradients, the gathered-target loss equals the full-logits loss, 8 devices equal 1, the scheduler's
epochs / early stopping, the initialisations, row layouts and the prompt store."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import translator
from tests import fixtures
from translator import sharding
from translator.models import DecoderConfig
from translator.models import functions as F
from translator.training import optimizers
from translator.tuning import data as data_lib
from translator.tuning import inits, schedule, step as step_lib, store

P, K, S = 4, 2, 2  # prompt length, examples per task, tasks per step


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tuning_world"))
  _, tasks = fixtures.make_world(root)
  lm_dir = fixtures.make_tiny_lm(os.path.join(root, "lm"), os.path.join(root, "tokenizer"))
  # 3 classification and 3 general tasks of the translator's train split
  chosen = [t for t in tasks if t.family == "classification"][:3] + [t for t in tasks if t.family == "general"][:3]
  return {"root": root, "lm_dir": lm_dir, "tasks": chosen}


def layout_for(lm, position="before_bos", max_len=40, max_target_len=8):
  return data_lib.Layout(prompt_length=P, prompt_position=position, max_len=max_len, max_target_len=max_target_len,
                         bos_id=lm.config.bos_token_id, eos_id=lm.config.eos_token_ids[0], pad_id=lm.pad_id)


def make_job(world, mesh, position="before_bos", lr=1e-2):
  lm = translator.load_lm(world["lm_dir"], mesh=mesh)
  layout = layout_for(lm, position)
  data = data_lib.TuningData(world["tasks"], data_lib.Encoder(lm.tokenizer, layout), max_train_per_task=8,
                             max_valid_per_task=4)
  tx = optimizers.make(ml_collections.ConfigDict(dict(name="adamw", lr=lr)), 100)
  tuner = step_lib.Tuner(mesh, lm.config, jax.tree_util.tree_map(lambda x: x.sharding, lm.params), layout,
                         num_tasks=len(world["tasks"]), tx=tx, tasks_per_step=S, examples_per_task=K)
  init = ml_collections.ConfigDict(dict(kind="random_vocab"))
  prompts = inits.initial_prompts(init, world["tasks"], lm.params, lm.config, prompt_length=P,
                                  sharding=tuner.prompt_sharding, tokenizer=lm.tokenizer)
  return lm, data, tuner, tuner.init_state(prompts)


def step_batch(mesh, data, task, cursor):
  plan = schedule.Plan(task=np.asarray(task, np.int32), cursor=np.asarray(cursor, np.int64))
  batch = data_lib.make_global(mesh, S * K, lambda r: data.step_row(plan.task, plan.cursor, K, r),
                               ("tokens", "mask", "target_pos", "target_ids", "target_mask"))
  batch["slot_task"] = data_lib.replicated(mesh, plan.task)
  return batch


def host(tree):
  return jax.tree_util.tree_map(lambda x: np.array(x), tree)


def test_only_prompts_are_updated(world):
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  lm, data, tuner, state = make_job(world, mesh)
  t = len(world["tasks"])
  lm_before = host(lm.params)
  before = host(state)
  rng = tuner.rng(0)
  state, aux = tuner.train_step(state, lm.params, step_batch(mesh, data, [1, 4], [0, 0]), rng)
  after = host(state)
  changed = [i for i in range(t) if not np.array_equal(before.prompts[i], after.prompts[i])]
  assert changed == [1, 4]
  np.testing.assert_array_equal(after.best_prompts, before.best_prompts)  # best changes only on validation
  for a, b in zip(jax.tree_util.tree_leaves(lm_before), jax.tree_util.tree_leaves(host(lm.params))):
    np.testing.assert_array_equal(a, b)  # the LM is bitwise unchanged
  # Optimizer state exists only for the prompt table: one [P, D] prompt's AdamW state per task.
  leaves = jax.tree_util.tree_leaves(after.opt_state)
  assert leaves and all(x.shape[0] == t and x.shape[1:] in ((), (P, lm.config.hidden_size)) for x in leaves)
  assert sum(x.size for x in leaves) <= t * (2 * P * lm.config.hidden_size + 2)
  counts = [x for x in leaves if x.shape == (t,)]
  assert all(list(c) == [0, 1, 0, 0, 1, 0] for c in counts)  # each task counts its own updates
  # A task outside the next step keeps its prompt and its optimizer state bit for bit (no momentum drift);
  # an empty slot (index T) trains nothing.
  state, _ = tuner.train_step(state, lm.params, step_batch(mesh, data, [0, t], [0, 0]), rng)
  again = host(state)
  changed = [i for i in range(t) if not np.array_equal(after.prompts[i], again.prompts[i])]
  assert changed == [0]
  for a, b in zip(jax.tree_util.tree_leaves(after.opt_state), jax.tree_util.tree_leaves(again.opt_state)):
    np.testing.assert_array_equal(a[4], b[4])
  assert float(aux["slots_filled"]) == 2 and np.isfinite(float(aux["loss"]))


def test_eight_devices_equal_one_device(world):
  results = []
  for mesh in (sharding.make_mesh(devices=jax.devices()[:1]), sharding.make_mesh(data=2, fsdp=2, tensor=2)):
    lm, data, tuner, state = make_job(world, mesh)
    rng = tuner.rng(0)
    for i in range(5):
      tasks = [(2 * i) % 6, (2 * i + 1) % 6]
      state, _ = tuner.train_step(state, lm.params, step_batch(mesh, data, tasks, [K * (i // 3)] * 2), rng)
    batch = data_lib.make_global(mesh, 8, lambda r: data.valid_row(r), ("tokens", "mask", "target_pos",
                                                                          "target_ids", "target_mask", "task"))
    ce, count = tuner.eval_losses(state.prompts, lm.params, batch)
    results.append((np.asarray(state.prompts), np.asarray(ce), np.asarray(count)))
  (p1, ce1, n1), (p8, ce8, n8) = results
  assert not np.array_equal(p1, host(make_job(world, sharding.make_mesh(devices=jax.devices()[:1]))[3]).prompts)
  np.testing.assert_allclose(p8, p1, atol=1e-5, rtol=0)
  np.testing.assert_allclose(ce8, ce1, atol=1e-4, rtol=1e-5)
  np.testing.assert_array_equal(n8, n1)


def _dot_shapes(jaxpr) -> list[tuple[int, ...]]:
  """Output shapes of the dots that contract the leading (row) axis of both operands: a weight gradient
  `x^T @ dy` does, a projection `x @ W` or its input gradient `dy @ W^T` does not."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, rhs_contract), _ = eqn.params["dimension_numbers"]
      if 0 in lhs_contract and 0 in rhs_contract:
        out.append(tuple(eqn.outvars[0].aval.shape))
    for sub in jax.core.jaxprs_in_params(eqn.params):
      out += _dot_shapes(sub)
  return out


@pytest.mark.parametrize("remat", [False, True])
def test_no_weight_gradients(world, remat):
  """The backward pass computes activation gradients only: no dot produces a weight-shaped result."""
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  lm, data, tuner, state = make_job(world, mesh)
  batch = step_batch(mesh, data, [0, 1], [0, 0])
  weight_shapes = {x.shape[1:] if x.ndim == 3 else x.shape for x in jax.tree_util.tree_leaves(lm.params)}
  weight_shapes = {s for s in weight_shapes if len(s) == 2}
  step = lambda st, params: step_lib.train_step(st, params, batch, tuner.rng(0), config=lm.config,
                                                layout=tuner.layout, tx=tuner.tx, examples_per_task=K, remat=remat)
  shapes = _dot_shapes(jax.make_jaxpr(step)(state, lm.params).jaxpr)
  assert not weight_shapes & set(shapes), weight_shapes & set(shapes)
  # The check itself: differentiating the LM's params does produce weight-shaped dots.
  loss = lambda params: step_lib.target_losses(params, lm.config, tuner.layout, state.prompts[:1].repeat(4, 0),
                                               {k: v for k, v in batch.items() if k != "slot_task"})[0].sum()
  assert weight_shapes & set(_dot_shapes(jax.make_jaxpr(jax.grad(loss))(lm.params).jaxpr))


@pytest.mark.parametrize("position", ["before_bos", "after_bos"])
def test_target_loss_equals_full_logits_loss(world, position):
  """Gathering the target positions before the LM head gives the loss of the full logits; after_bos reads
  [emb(BOS)][prompt][text] and before_bos [prompt][BOS][text]. Rows that share a prompt may run it once."""
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  lm, data, tuner, state = make_job(world, mesh, position)
  rows = data_lib.stack([data.train[i] for i in range(0, 40, 5)])
  prompts = np.asarray(state.prompts)[rows["task"]]
  batch = {k: jnp.asarray(rows[k]) for k in ("tokens", "mask", "target_pos", "target_ids", "target_mask")}
  losses = jax.jit(step_lib.target_losses, static_argnums=(1, 2, 5, 6))
  ce, count, _ = losses(lm.params, lm.config, tuner.layout, jnp.asarray(prompts), batch)

  bos = np.asarray(F.embed(lm.params, lm.config, jnp.ones((len(prompts), 1), jnp.int32)))
  assert (rows["tokens"][:, 0] == 1).all() == (position == "before_bos")
  head = np.concatenate([bos, prompts], 1) if position == "after_bos" else prompts
  x = np.concatenate([head, np.asarray(F.embed(lm.params, lm.config, batch["tokens"]))], 1)
  n, length = x.shape[:2]
  valid = np.concatenate([np.ones((n, head.shape[1]), bool), rows["mask"]], 1)
  positions = jnp.broadcast_to(jnp.arange(length), (n, length))
  full = jax.jit(F.apply_embedded, static_argnums=1)
  logits = np.asarray(full(lm.params, lm.config, jnp.asarray(x), positions, jnp.asarray(valid)).logits)
  for b in range(n):
    ex = data.train_examples[[i for i in range(0, 40, 5)][b]]
    target = lm.tokenizer.encode(ex.target, add_special_tokens=False) + [2]
    real = int(rows["mask"][b].sum())
    where = head.shape[1] + np.arange(real - len(target), real) - 1  # positions predicting the target tokens
    ref = optax.softmax_cross_entropy_with_integer_labels(logits[b, where], np.asarray(target)).sum()
    np.testing.assert_allclose(float(ce[b]), float(ref), rtol=2e-5)
    assert int(count[b]) == len(target)

  # The rows of one task share its prompt: run once per task (train_step's path), the same losses.
  pairs = [np.flatnonzero(rows["task"] == t)[:2] for t in np.unique(rows["task"])]
  order = np.concatenate([p for p in pairs if len(p) == 2])  # 2 rows of each task that has them
  assert len(order) >= 4
  shared = losses(lm.params, lm.config, tuner.layout, jnp.asarray(prompts[order][::2]),
                  {k: v[order] for k, v in batch.items()}, False, 2)
  np.testing.assert_allclose(np.asarray(shared[0]), np.asarray(ce)[order], rtol=2e-5)
  np.testing.assert_array_equal(np.asarray(shared[1]), np.asarray(count)[order])


def test_rows_and_global_batches(world):
  mesh = sharding.make_mesh(data=4, fsdp=2, tensor=1)
  lm = translator.load_lm(world["lm_dir"])
  layout = layout_for(lm, max_len=12, max_target_len=3)
  enc = data_lib.Encoder(lm.tokenizer, layout)
  ex = data_lib.Example(0, "Input: the big gray salmon swims\nOutput:", " fish and more words")
  row = enc.train_row(ex)
  prompt_ids = lm.tokenizer.encode(ex.prompt, add_special_tokens=False)
  target_ids = (lm.tokenizer.encode(ex.target, add_special_tokens=False) + [2])[:3]
  assert row["truncated"] and row["mask"].all()
  np.testing.assert_array_equal(row["tokens"], [1] + prompt_ids[-8:] + target_ids)  # input cut from the left
  np.testing.assert_array_equal(row["target_ids"], target_ids)
  np.testing.assert_array_equal(row["target_pos"], P + 9 + np.arange(3) - 1)
  gen = enc.generation_row(ex)
  assert gen["mask"].sum() == 9 and not gen["mask"][:3].any()  # the training row's prompt, left-padded
  np.testing.assert_array_equal(gen["ids"][3:], [1] + prompt_ids[-8:])
  after = data_lib.Encoder(lm.tokenizer, layout_for(lm, "after_bos", 40, 8)).train_row(ex)
  assert after["tokens"][0] == prompt_ids[0] and after["target_pos"][0] == P + 1 + len(prompt_ids) - 1

  data = data_lib.TuningData(world["tasks"], data_lib.Encoder(lm.tokenizer, layout_for(lm)), max_train_per_task=8)
  # Each task's stream is a fresh permutation of its train examples every epoch, the same on every call.
  for t in range(len(world["tasks"])):
    order = [data.train_index(t, c) - data.train_offsets[t] for c in range(16)]
    assert sorted(order[:8]) == sorted(order[8:]) == list(range(8)) and order[:8] != order[8:]
  task = np.asarray([3, 6, 0, 1], np.int32)  # 6 = T: an empty slot
  cursor = np.asarray([5, 0, 0, 2])
  batch = data_lib.make_global(mesh, 8, lambda r: data.step_row(task, cursor, 2, r), ("tokens", "target_mask"))
  assert batch["tokens"].sharding.spec[0] == ("data", "fsdp")
  expected = [data.train[data.train_index(t, c + j)]["tokens"] if t < 6 else np.full(40, 0)
              for t, c in zip(task, cursor) for j in range(2)]
  np.testing.assert_array_equal(np.asarray(batch["tokens"]), np.stack(expected))
  assert not np.asarray(batch["target_mask"])[2:4].any() and np.asarray(batch["target_mask"])[4:].any()


def test_scheduler_round_robin_epochs_and_early_stopping():
  sched = schedule.Scheduler([8, 8, 8, 4, 8], tasks_per_step=2, examples_per_task=4, max_epochs=3, patience=2)
  seen_tasks = []
  for _ in range(4):
    plan = sched.plan()
    assert len(set(plan.task.tolist())) == 2
    seen_tasks += plan.task.tolist()
    sched.commit(plan)
  assert max(sched.updates) - min(sched.updates) <= 1 and set(seen_tasks) == set(range(5))
  assert sched.status[3] == schedule.PENDING  # task 3 (4 examples) finished an epoch after one update
  while not sched.needs_eval():
    sched.commit(sched.plan())
  assert sched.count(schedule.ACTIVE) < 2
  pending = sched.pending()
  improved = sched.record(pending, np.full(len(pending), 1.0))
  assert improved[pending].all() and (sched.status[pending] == schedule.ACTIVE).all()
  saved = json.loads(json.dumps(sched.to_json()))
  twin = schedule.Scheduler([8, 8, 8, 4, 8], tasks_per_step=2, examples_per_task=4, max_epochs=3, patience=2)
  twin.load_json(saved)
  for f in schedule.Scheduler._FIELDS:
    np.testing.assert_array_equal(getattr(twin, f), getattr(sched, f))
  # No improvement twice in a row: patience 2 runs out; the best epoch stays the first.
  t = int(pending[0])
  for loss in (1.5, 1.0):
    sched.status[t] = schedule.PENDING
    assert not sched.record(np.asarray([t]), np.asarray([loss]))[t]
  assert sched.status[t] == schedule.STOPPED and sched.best_epoch[t] == 1 and sched.best_loss[t] == 1.0
  assert t not in sched.plan().task
  # Improving every time: stops after max_epochs.
  u = int(pending[1])
  for loss in (0.9, 0.8):
    sched.status[u] = schedule.PENDING
    assert sched.record(np.asarray([u]), np.asarray([loss]))[u]
  assert sched.status[u] == schedule.FINISHED and sched.best_epoch[u] == 3
  # Fewer active tasks than slots: the rest of the step is empty (index T).
  sched.status[:] = schedule.STOPPED
  sched.status[2] = schedule.ACTIVE
  assert sched.plan().task.tolist() == [2, 5]


def test_initialisations(world):
  lm = translator.load_lm(world["lm_dir"])
  tasks = world["tasks"]
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  shard = step_lib.table_sharding(mesh, (len(tasks), P, lm.config.hidden_size))
  table = np.asarray(lm.params["model"]["embed_tokens"]["embedding"])
  make = lambda **kw: np.asarray(inits.initial_prompts(ml_collections.ConfigDict(kw), tasks, lm.params, lm.config,
                                                       prompt_length=P, sharding=shard, tokenizer=lm.tokenizer))

  def rows_of(prompts):  # the vocabulary id of every prompt vector (each must be an embedding row)
    d = ((prompts[..., None, :] - table) ** 2).sum(-1)
    assert np.allclose(d.min(-1), 0.0)
    return d.argmin(-1)

  assert rows_of(make(kind="random_vocab")).max() > 100
  assert rows_of(make(kind="sampled_vocab", vocab_sample_size=100)).max() < 100
  labels = rows_of(make(kind="class_labels", vocab_sample_size=50))
  cls = tasks[0]
  ids = [i for c in cls.classes for i in lm.tokenizer.encode(" " + c, add_special_tokens=False)]
  assert labels[0].tolist() == np.resize(ids, P).tolist() and labels[5].max() < 50  # general: the fallback
  text = rows_of(make(kind="text", text="Classify"))
  assert (text == np.resize(lm.tokenizer.encode("Classify", add_special_tokens=False), P)).all()
  uniform = make(kind="uniform", uniform_range=0.5, match_embedding_rms=True)
  assert abs(np.sqrt((uniform ** 2).mean()) / np.sqrt((table ** 2).mean()) - 1) < 0.1
  # A task's initial prompt depends on its name and the seed, not on the other tasks of the table.
  alone = np.asarray(inits.initial_prompts(ml_collections.ConfigDict(dict(kind="random_vocab")), tasks[3:4],
                                           lm.params, lm.config, prompt_length=P,
                                           sharding=step_lib.table_sharding(mesh, (1, P, lm.config.hidden_size))))
  np.testing.assert_array_equal(alone[0], make(kind="random_vocab")[3])


def test_initialisation_lives_in_the_scaled_embedding_space(world):
  """Gemma multiplies embeddings by sqrt(D): the initial prompt is in that space, as an embedded prefix is."""
  config = DecoderConfig(family="gemma", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, norm_plus_one=True,
                         scale_embeddings=True, hidden_act="gelu_pytorch_tanh")
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  params = nn.unbox(F.init_params(config, jax.random.key(0)))
  tasks = world["tasks"][:2]
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  prompts = inits.initial_prompts(ml_collections.ConfigDict(dict(kind="random_vocab")), tasks, params, config,
                                  prompt_length=3, sharding=step_lib.table_sharding(mesh, (2, 3, 16)))
  ids = inits.init_ids("random_vocab", tasks, prompt_length=3, vocab_size=64)
  table = np.asarray(params["model"]["embed_tokens"]["embedding"])
  np.testing.assert_allclose(np.asarray(prompts), table[ids] * np.float32(4.0), rtol=1e-6)


def test_store_round_trip_and_verification(tmp_path):
  names = ["task_b", "task_a", "task_c"]
  prompts = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
  records = [{"best_valid_loss": float(i), "lm": {"weights_sha256": "x"}} for i in range(3)]
  directory = str(tmp_path / "prompts")
  store.write(directory, names, prompts, records)
  got_names, got, meta = translator.tuning.read(directory)
  assert got_names == names and got.dtype == np.float32
  np.testing.assert_array_equal(got, prompts)
  assert meta["task_c"]["best_valid_loss"] == 2.0 and meta["task_c"]["index"] == 2
  assert store.read(os.path.join(directory, store.PROMPTS_FILE))[0] == names
  assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]
  with pytest.raises(ValueError, match="match"):
    store.write(directory, names[:2], prompts, records)
  path = os.path.join(directory, store.PROMPTS_FILE)
  with open(path, "r+b") as f:  # flip one byte of the tensor data
    f.seek(-1, os.SEEK_END)
    last = f.read(1)
    f.seek(-1, os.SEEK_END)
    f.write(bytes([last[0] ^ 1]))
  with pytest.raises(ValueError, match="SHA-256"):
    store.read(directory)
  os.remove(os.path.join(directory, store.METADATA_FILE))
  with pytest.raises(FileNotFoundError, match="metadata.json"):
    store.read(directory)
