"""The translator's pieces: only the encoder and LoRA weights train (the decoder is bitwise frozen and has no
optimizer state), the four encoders' shapes, and the task split / pair augmentation of the training data."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tests import fixtures
from translator import sharding
from translator.data import dod
from translator.models import functions as F
from translator.models import lora as lora_lib
from translator.translation import data as data_lib
from translator.translation import encoders, step as step_lib

V, P, D_SRC, B, T = 61, 4, 24, 4, 8


def host(tree):
  return jax.tree_util.tree_map(np.array, tree)


@pytest.mark.parametrize("kind,lora_rank", [("mlp", 4), ("transformer", 0)])
def test_only_trainables_are_updated(kind, lora_rank):
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  config = fixtures.tiny_config(V)
  shardings = sharding.shardings(F.abstract_params(config), mesh)
  lm_params = jax.device_put(nn.unbox(F.init_params(config, jax.random.key(0))), nn.unbox(shardings))
  encoder = encoders.make(ml_collections.ConfigDict(dict(kind=kind, width=16, depth=1, heads=2, dropout=0.1)),
                          config.hidden_size)
  lora = lora_lib.LoraConfig(rank=lora_rank, dropout=0.1) if lora_rank else None
  spec = step_lib.Spec(encoder=encoder, config=config, lora=lora, bos_id=1, eos_ids=(2,), pad_id=3)
  tx = optax.adamw(1e-2, weight_decay=0.1)
  trainer = step_lib.Trainer(mesh, spec, jax.tree_util.tree_map(lambda x: x.sharding, lm_params), tx)
  trainable = {"encoder": encoders.init(encoder, jax.random.key(1), (P, D_SRC)),
               "lora": lora_lib.init(config, lora, jax.random.key(2)).weights if lora else {}}
  state = trainer.init_state(trainable)
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, V, (B, T)).astype(np.int32)
  tokens[:, 0] = 1
  mask = np.arange(T)[None] < np.array([[8], [5], [3], [8]])
  batch = {"prompts": jnp.asarray(rng.normal(0, 0.02, (B, P, D_SRC)), jnp.float32), "tokens": jnp.asarray(tokens),
           "mask": jnp.asarray(mask), "weight": jnp.ones((B,), jnp.float32)}
  lm_before, before = host(lm_params), host(state)
  for _ in range(2):
    state, aux = trainer.train_step(state, lm_params, batch, trainer.rng(0))
  after = host(state)
  for a, b in zip(jax.tree_util.tree_leaves(lm_before), jax.tree_util.tree_leaves(host(lm_params))):
    np.testing.assert_array_equal(a, b)  # the decoder is bitwise unchanged
  for a, b in zip(jax.tree_util.tree_leaves(before.trainable), jax.tree_util.tree_leaves(after.trainable)):
    assert not np.array_equal(a, b)  # every encoder and LoRA weight moved
  assert int(after.step) == 2 and np.isfinite(float(aux["loss"]))
  # Optimizer state exists for the trainables alone: AdamW's mu and nu have exactly their tree.
  mu = [s.mu for s in jax.tree_util.tree_leaves(after.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
        if hasattr(s, "mu")][0]
  assert jax.tree_util.tree_structure(mu) == jax.tree_util.tree_structure(after.trainable)
  n_trainable = sum(x.size for x in jax.tree_util.tree_leaves(after.trainable))
  assert sum(x.size for x in jax.tree_util.tree_leaves(after.opt_state)) <= 2 * n_trainable + 2
  assert set(after.trainable) == {"encoder", "lora"} and bool(after.trainable["lora"]) == bool(lora_rank)


def test_prompt_noise_perturbs_training_prompts_alone():
  """`prompt_noise` changes the training loss (noise of that fraction of each vector's RMS, drawn from the step's
  key), never the loss without a key (validation, translation); 0 leaves training exactly as before."""
  config = fixtures.tiny_config(V)
  lm_params = nn.unbox(F.init_params(config, jax.random.key(0)))
  encoder = encoders.make(ml_collections.ConfigDict(dict(kind="linear")), config.hidden_size)
  trainable = {"encoder": encoders.init(encoder, jax.random.key(1), (P, D_SRC)), "lora": {}}
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, V, (B, T)).astype(np.int32)
  tokens[:, 0] = 1
  batch = {"prompts": jnp.asarray(rng.normal(0, 0.02, (B, P, D_SRC)), jnp.float32), "tokens": jnp.asarray(tokens),
           "mask": jnp.ones((B, T), bool), "weight": jnp.ones((B,), jnp.float32)}

  def loss(noise, key):
    spec = step_lib.Spec(encoder=encoder, config=config, lora=None, bos_id=1, eos_ids=(2,), pad_id=3,
                         prompt_noise=noise)
    return np.asarray(step_lib.losses(spec, trainable, lm_params, batch, key)[0])

  key = jax.random.key(5)
  clean = loss(0.0, None)
  np.testing.assert_array_equal(loss(0.5, None), clean)
  np.testing.assert_array_equal(loss(0.0, key), clean)  # no dropout here: the key alone changes nothing
  noisy = loss(0.5, key)
  assert np.all(np.abs(noisy - clean) > 1e-6)
  np.testing.assert_array_equal(loss(0.5, key), noisy)  # a function of the key
  assert not np.array_equal(loss(0.5, jax.random.key(6)), noisy)


def test_encoder_shapes():
  prompts = jax.random.normal(jax.random.key(0), (2, P, D_SRC))
  shapes = {}
  for kind, extra, outs in (("identity", {}, (D_SRC, 40)), ("linear", {}, (D_SRC, 40)), ("mlp", {}, (D_SRC, 40)),
                            ("transformer", {}, (D_SRC, 40)), ("transformer", {"num_queries": 3}, (40,))):
    for out in outs:
      if kind == "identity" and out != D_SRC:
        with pytest.raises(ValueError, match="use encoder.kind='linear'"):
          encoders.make({"kind": kind}, out).apply({}, prompts)
        continue
      enc = encoders.make(dict(kind=kind, width=16, depth=1, heads=2, **extra), out, output_rms=0.5)
      params = encoders.init(enc, jax.random.key(1), (P, D_SRC))
      y = enc.apply({"params": params}, prompts)
      shapes[kind, out, bool(extra)] = y.shape
      if out == D_SRC and kind in ("identity", "linear", "mlp", "transformer") and not extra:
        np.testing.assert_allclose(np.asarray(y), np.asarray(prompts), atol=1e-6)  # starts as the identity
  assert shapes["linear", 40, False] == (2, P, 40) and shapes["mlp", 40, False] == (2, P, 40)
  assert shapes["transformer", 40, False] == (2, P, 40) and shapes["transformer", 40, True] == (2, 3, 40)
  with pytest.raises(ValueError, match="not one of"):
    encoders.make({"kind": "lstm"}, 8)


def test_aligned_linear_maps_each_source_token_onto_the_decoder_token():
  rng = np.random.default_rng(0)
  src = rng.normal(size=(300, D_SRC))
  a, b = rng.normal(size=(D_SRC, 40)), rng.normal(size=40)
  dec = src @ a + b  # an exactly affine relation is recovered
  params = encoders.aligned_linear(src, dec)
  y = encoders.make({"kind": "linear"}, 40).apply({"params": params}, jnp.asarray(src[None], jnp.float32))
  np.testing.assert_allclose(np.asarray(y[0]), dec, rtol=1e-4, atol=1e-4)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      encoders.init(encoders.make({"kind": "linear"}, 40), jax.random.key(0), (P, D_SRC)))
  with pytest.raises(ValueError, match="one vocabulary"):
    encoders.aligned_linear(src, dec[:-1])


def task(name, family, split, paraphrases=("p1", "p2", "p3")):
  return dod.Task(name=name, family=family, instruction=f"do {name}", paraphrases=paraphrases, classes=(),
                  split=split, instances={})


def test_split_by_task_and_augmentation():
  tasks = ([task(f"c{i}", "classification", "train") for i in range(10)] +
           [task(f"g{i}", "general", "train") for i in range(10)] +
           [task("ct", "classification", "test"), task("gt", "general", "test"), task("gn", "general", "novel")])
  names = [t.name for t in tasks]
  table = data_lib.PromptTable(np.zeros((2 * len(names), P, D_SRC), np.float32), names + names,
                               np.repeat([0, 1], len(names)), ["s0", "s1"], [{}] * (2 * len(names)))
  splits = data_lib.split_tasks(tasks, names, valid_tasks=0.2, seed=0)
  assert splits["test"] == ["ct", "gt"] and splits["novel"] == ["gn"]
  assert len(splits["valid"]) == 4 and sum(n.startswith("c") for n in splits["valid"]) == 2
  assert not set(splits["train"]) & (set(splits["valid"]) | {"ct", "gt", "gn"})
  assert data_lib.split_tasks(tasks, names, 0.2, seed=0) == splits  # seeded
  by_name = {t.name: t for t in tasks}
  pairs = data_lib.train_pairs(table, by_name, splits["train"], paraphrases=2)
  assert len(pairs) == 16 * 2 * 3  # tasks x stores x (instruction + 2 paraphrases)
  assert {table.task_names[r] for r, _ in pairs} == set(splits["train"])
  assert len(data_lib.train_pairs(table, by_name, splits["train"], paraphrases=-1)) == 16 * 2 * 4
  assert data_lib.eval_items(table, by_name, ["gt"]) == [(21, "do gt"), (44, "do gt")]
  order = data_lib.epoch_order(10, 1, 0)
  rows, weight = data_lib.batch_rows(order, 2, 4)  # the short last batch: 2 real rows
  assert list(weight) == [1, 1, 0, 0] and list(rows[:2]) == list(order[8:])


def test_checked_translation_keeps_the_candidate_that_behaves_like_the_soft_prompt():
  """Of the greedy text and the samples, the check keeps the hard prompt whose answers on the task's unlabeled
  valid inputs match the soft prompt's; on a tie the greedy text stays. No gold output is read."""
  from translator.translation import checked  # pylint: disable=g-import-not-at-top

  def translate(prompts, temperature=0.0, rng=None):
    if temperature == 0.0:
      return ["copy the input" for _ in prompts]
    k = int(jax.random.randint(rng, (), 0, 2))  # two different samples over the draws, repeats dropped
    return [["reverse the input", "upper-case the input"][k]] * len(prompts)

  options = checked.candidates(translate, np.zeros((2, 3, 4)), samples=6, temperature=1.0, rng=jax.random.PRNGKey(0))
  assert all(row[0] == "copy the input" and len(row) == len(set(row)) <= 3 for row in options)
  options = [["copy the input", "reverse the input", "upper-case the input"]] * 2

  valid = (dod.Instance("ab", "GOLD NOT READ"), dod.Instance("cd", "GOLD NOT READ"))
  tasks = [dod.Task(name=f"t{i}", family="general", instruction="x", paraphrases=(), classes=(), split="test",
                    instances={"valid": valid}, meta={}) for i in range(2)]
  act = {"copy": lambda x: x, "reverse": lambda x: x[::-1], "upper-case": str.upper}
  seen_prefixes = []

  def soft_generate(texts, prefixes):  # task 0's soft prompt reverses, task 1's answers "zz" (nothing matches)
    seen_prefixes.append(np.asarray(prefixes))
    return [x[::-1] if p[0, 0] == 0 else "zz" for x, p in zip((t.split("Input: ")[1].split("\n")[0] for t in texts),
                                                                 prefixes)]

  def hard_generate(texts):
    out = []
    for text in texts:
      instruction, x = text.split("\n")[0], text.split("Input: ")[1].split("\n")[0]
      out.append(act[next(k for k in act if instruction.startswith(k))](x))
    return out

  soft = np.stack([np.zeros((3, 4)), np.ones((3, 4))])
  for agreement in ("exact_match", "rouge_l"):
    chosen, scores = checked.choose(tasks, options, soft_generate, soft, hard_generate, probe_instances=2,
                                    agreement=agreement)
    assert chosen == ["reverse the input", "copy the input"]  # task 1: all tie at 0, the greedy text stays
    assert scores[0]["reverse the input"]["agreement"] == 1.0
    assert all(s["agreement"] == 0.0 for s in scores[1].values())
  assert seen_prefixes[0].shape == (4, 3, 4)  # each task's soft prompt, once per probe input
  summary = checked.summary(scores, options, chosen)
  assert summary["replaced"] == 0.5 and summary["agreement_chosen"] == 0.5 and summary["agreement_greedy"] == 0.0
  # Consensus: task 1's candidates all disagree with its soft prompt; the two that share "the input" beat the
  # greedy "copy it" (mean ROUGE-L 0 to the others), the earlier of them wins; task 0 keeps its best agreement.
  options = [["copy it", "reverse the input", "upper-case the input"]] * 2
  chosen, scores = checked.choose(tasks, options, soft_generate, soft, hard_generate, probe_instances=2,
                                  agreement="exact_match", consensus=0.0)
  assert chosen == ["reverse the input", "copy it"]
  chosen, scores = checked.choose(tasks, options, soft_generate, soft, hard_generate, probe_instances=2,
                                  agreement="exact_match", consensus=1.0)
  assert chosen == ["reverse the input", "reverse the input"]
  assert scores[1]["copy it"]["consensus"] == 0.0 and scores[1]["reverse the input"]["consensus"] > 0.0
  with pytest.raises(ValueError, match="no 'test' instances"):
    checked.choose(tasks, options, soft_generate, soft, hard_generate, probe_split="test")
  with pytest.raises(ValueError, match="agreement"):
    checked.choose(tasks, options, soft_generate, soft, hard_generate, agreement="bleu")
