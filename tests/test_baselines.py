"""The training-free baselines on a tiny random Llama of the synthetic world: nearest-token projection finds
the rows it was built from; InSPEcT's source pass is the prompt read as an embedded prefix, its patched
generation is a plain `sampler.sample` with `Patch.at` (per row, any padding), and the layer sweep covers
every pair and keeps the one the similarity favours."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import translator
from tests import fixtures
from translator.baselines import inspect_baseline as ib
from translator.baselines import nearest_token
from translator.models import Patch, sampler

P = 4
NEW = 8  # new tokens per description: enough to compare, cheap to decode
RAW = ib.InspectConfig(batch_size=4, max_new_tokens=NEW, stop_strings=())  # uncut texts: strict comparisons


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("baselines"))
  _, tasks = fixtures.make_world(directory)
  path = fixtures.make_tiny_lm(os.path.join(directory, "lm"), os.path.join(directory, "tokenizer"), seed=0)
  return translator.load_lm(path), tasks


def _prompts(lm, n, seed=0):
  """Soft prompts at the scale of the embedding rows."""
  table = np.asarray(nearest_token.embedding_table(lm))
  scale = np.abs(table).mean() * np.sqrt(np.pi / 2)  # the rows' per-coordinate standard deviation
  return np.random.default_rng(seed).normal(0, 3 * scale, (n, P, lm.config.hidden_size)).astype(np.float32)


def _train(tasks, family):
  return [t for t in tasks if t.split == "train" and t.family == family]


def _cosine_argmax(table, vectors, allowed):
  t = table / np.linalg.norm(table, axis=-1, keepdims=True)
  v = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
  return np.where(allowed[None], v @ t.T, -np.inf).argmax(-1)


# ---------------------------------------------------------------------------------------------------
# Nearest token.


def test_nearest_token_recovers_embedding_rows(world):
  lm, _ = world
  table = np.asarray(nearest_token.embedding_table(lm))
  rng = np.random.default_rng(0)
  ids = rng.integers(4, table.shape[0], (3, 5))
  scale = rng.uniform(0.5, 4.0, (3, 5, 1)) * np.sqrt(lm.config.hidden_size)  # Gemma-like scaled inputs
  out = nearest_token.project(lm, table[ids] * scale, batch_size=2, chunk=100)  # 100 does not divide V
  np.testing.assert_array_equal(out.ids, ids)
  np.testing.assert_allclose(out.cosines, 1.0, atol=1e-5)
  assert out.texts == [lm.tokenizer.decode(r.tolist()) for r in ids]
  # Arbitrary vectors: the brute-force argmax of the cosine.
  vectors = rng.normal(size=(2, 3, lm.config.hidden_size)).astype(np.float32)
  want = _cosine_argmax(table, vectors.reshape(6, -1), np.ones(table.shape[0], bool)).reshape(2, 3)
  np.testing.assert_array_equal(nearest_token.project(lm, vectors, chunk=256).ids, want)


def test_nearest_token_excludes_special_ids(world):
  lm, _ = world
  table = np.asarray(nearest_token.embedding_table(lm))
  special = nearest_token.special_ids(lm)
  assert special == [0, 1, 2, 3]  # <unk>, <s>, </s>, <pad>
  ids = np.array([[1, 2, 3, 10]])
  plain = nearest_token.project(lm, table[ids])
  np.testing.assert_array_equal(plain.ids, ids)
  assert plain.texts == [lm.tokenizer.decode([10])]  # special tokens are dropped from the text
  allowed = np.ones(table.shape[0], bool)
  allowed[special] = False
  banned = nearest_token.project(lm, table[ids], exclude_special=True)
  np.testing.assert_array_equal(banned.ids[0], _cosine_argmax(table, table[ids[0]], allowed))
  assert not set(banned.ids[0].tolist()) & set(special) and banned.ids[0, 3] == 10
  assert nearest_token.project(lm, table[ids], exclude=[10]).ids[0, 3] != 10
  with pytest.raises(ValueError, match="outside the vocabulary"):
    nearest_token.project(lm, table[ids], exclude=[table.shape[0]])


# ---------------------------------------------------------------------------------------------------
# InSPEcT: texts.


def test_cut_at_stop_strings():
  stops = ib.InspectConfig().stop_strings
  assert ib.cut(" Reverse the words. Then more", stops) == "Reverse the words"
  assert ib.cut(" red, fish, sea | Sentence", stops) == "red, fish, sea"
  assert ib.cut("Add 1\nInput:", stops) == "Add 1"
  assert ib.cut("costs $5.", stops) == "costs"
  assert ib.cut("| nothing", stops) == ""
  assert ib.cut("  no stop at all ", stops) == "no stop at all"
  assert ib.cut("a.b|c", ()) == "a.b|c"


def test_target_prompts_and_golds(world):
  _, tasks = world
  cfg = ib.InspectConfig()
  general, classification = _train(tasks, "general"), _train(tasks, "classification")
  pool = general + classification
  names = [general[0].name, classification[0].name]
  targets = ib.target_prompts(["general", "classification"], pool, 3, cfg, names=names)
  items = targets[0].split(" | ")
  assert len(items) == 4 and items[-1] == "Instruction: x x x"
  instructions = {t.instruction: t for t in general}
  demos = [instructions[i[len("Instruction: "):]] for i in items[:3]]
  assert len({d.name for d in demos}) == 3 and general[0].name not in {d.name for d in demos}
  items = targets[1].split(" | ")
  assert items[-1] == "Sentence classification: x x x"
  lists = {", ".join(t.classes): t for t in classification}
  demos = [lists[i[len("Sentence classification: "):]] for i in items[:3]]
  assert classification[0].name not in {d.name for d in demos}
  # Demonstrations depend on (seed, task name) only: not on the other rows or the pool's order.
  assert ib.target_prompts(["general"], pool[::-1], 3, cfg, names=names[:1]) == targets[:1]
  other = ib.target_prompts(["general", "classification"], pool, 3, ib.InspectConfig(seed=1), names=names)
  assert other != targets
  with pytest.raises(ValueError, match="fewer than num_demos"):
    ib.target_prompts(["general"], general[:3], 3, cfg, names=[general[0].name])
  # Golds: the instruction, or the class list the query item should be completed with.
  assert ib.gold_reference(general[0]) == general[0].instruction
  c = classification[0]
  assert ib.gold_reference(c) == ", ".join(c.classes)
  assert ib.hard_prompt(c, ib.gold_reference(c)) == "Sentence classification: " + ", ".join(c.classes)


def test_config_round_trip():
  c = ib.inspect_config()
  c.source_layers = (1, 2)
  cfg = ib.InspectConfig.from_config(c)
  assert cfg.source_layers == (1, 2) and cfg.max_new_tokens == 60 and cfg.stop_strings == ("\n", "$", ".", "|")
  with pytest.raises(ValueError, match="unknown InSPEcT config fields"):
    ib.InspectConfig.from_config({"num_shots": 3})


# ---------------------------------------------------------------------------------------------------
# InSPEcT: source pass and patching.


def test_source_states_are_the_prompt_read_as_prefix(world):
  lm, _ = world
  prompts = _prompts(lm, 3)
  cfg = ib.InspectConfig(batch_size=2)  # 3 prompts: the second batch is padded
  states = ib.source_states(lm, prompts, cfg)
  assert states.shape == (3, lm.config.num_hidden_layers + 1, P, lm.config.hidden_size)
  ids, mask = lm.encode(["Input: a b\nOutput:"] * 3)
  ref = lm.forward(ids, mask=mask, embedded_prefix=jnp.asarray(prompts), return_hidden=True).all_hidden
  np.testing.assert_allclose(states, np.swapaxes(np.asarray(ref[:, :, :P]), 0, 1), atol=1e-5, rtol=0)
  np.testing.assert_array_equal(states[:, 0], prompts)
  # At the output of layer 1 instead: layer 0 holds the placeholders' embeddings, layer 1 the prompt.
  late = ib.source_states(lm, prompts, ib.InspectConfig(batch_size=2, inject_layer=1))
  np.testing.assert_array_equal(late[:, 1], prompts)
  x = np.asarray(lm.embed(np.full((1, P), ib.placeholder_id(lm))))[0]
  np.testing.assert_allclose(late[:, 0], np.broadcast_to(x, late[:, 0].shape), atol=1e-6)
  # After BOS: the prompt at positions 1..P, so the later layers see BOS too.
  bos = ib.source_states(lm, prompts, ib.InspectConfig(batch_size=2, source_bos=True), layers=(0, 2))
  np.testing.assert_array_equal(bos[:, 0], prompts)
  assert np.abs(bos[:, 1] - states[:, 2]).max() > 1e-3


def _manual(lm, prompt, target, s, t):
  """One description the long way: source states, then `sampler.sample` with `Patch.at`, uncut."""
  states = ib.source_states(lm, prompt[None], RAW)
  ids, mask = lm.encode([target])
  n = ids.shape[1]
  patch = Patch.at(t, n - P, jnp.asarray(states[:, s]), length=n)
  out = sampler.sample(lm.params, lm.config, jnp.asarray(ids), mask=jnp.asarray(mask), patch=patch,
                       max_new_tokens=NEW, eos_ids=lm.eos_ids, pad_id=lm.pad_id)
  unpatched = sampler.sample(lm.params, lm.config, jnp.asarray(ids), mask=jnp.asarray(mask),
                             max_new_tokens=NEW, eos_ids=lm.eos_ids, pad_id=lm.pad_id)
  return lm.decode(out.tokens)[0], lm.decode(unpatched.tokens)[0]


def test_describe_is_a_patched_sample(world):
  lm, tasks = world
  prompts = _prompts(lm, 1)
  general = _train(tasks, "general")
  target = ib.target_prompts(["general"], general, P, RAW, names=[general[0].name])[0]
  manual, unpatched = _manual(lm, prompts[0], target, s=1, t=2)
  assert manual != unpatched  # the patch changes the continuation
  assert ib.describe(lm, prompts, [target], (1, 2), RAW) == [manual.strip()]
  # With stop strings, generation ends at the first token holding one; the text is the manual one, cut.
  # A character from the middle of this description stops it for sure.
  middle = next(c for c in manual[len(manual) // 2:] if not c.isspace())
  stops = ib.InspectConfig(batch_size=4, max_new_tokens=NEW, stop_strings=(middle, "|"))
  want = ib.cut(manual, stops.stop_strings)
  assert len(want) < len(manual.strip())
  assert ib.describe(lm, prompts, [target], (1, 2), stops) == [want]


def test_rows_with_their_own_pairs_and_padding_match_single_rows(world):
  lm, tasks = world
  prompts = _prompts(lm, 5, seed=1)
  pool = _train(tasks, "general") + _train(tasks, "classification")
  families = ["general", "classification", "general", "classification", "general"]
  targets = ib.target_prompts(families, pool, P, RAW)
  lengths = [len(lm.encode([t])[0][0]) for t in targets]
  assert len(set(lengths)) > 1  # rows are left-padded by different amounts
  pairs = [(0, 0), (1, 2), (2, 1), (2, 2), (0, 1)]
  batched = ib.describe(lm, prompts, targets, pairs, RAW)  # 5 rows, batch 4: the second batch is padded
  alone = [ib.describe(lm, prompts[i:i + 1], targets[i:i + 1], pairs[i], RAW)[0] for i in range(5)]
  assert batched == alone
  # The same prompt and target under each pair: the pair matters.
  same = ib.describe(lm, np.repeat(prompts[:1], 4, 0), targets[:1] * 4, [(0, 0), (1, 1), (2, 2), (1, 2)], RAW)
  assert len(set(same)) > 1
  with pytest.raises(ValueError, match="placeholder tokens"):
    ib.describe(lm, prompts[:1], [targets[0][:-2]], (0, 0), RAW)  # one placeholder short
  with pytest.raises(ValueError, match="outside 0..2"):
    ib.describe(lm, prompts[:1], targets[:1], (0, 3), RAW)


def test_select_layers_sweeps_every_pair_and_keeps_the_favoured_one(world):
  lm, tasks = world
  prompts = _prompts(lm, 2, seed=2)
  general = _train(tasks, "general")
  names = [general[0].name, general[1].name]
  targets = ib.target_prompts(["general"] * 2, general, P, RAW, names=names)
  golds = [ib.gold_reference(t) for t in general[:2]]
  num = lm.config.num_hidden_layers + 1
  all_pairs = [(s, t) for s in range(num) for t in range(num)]
  texts = ib.describe(lm, np.repeat(prompts, len(all_pairs), 0), [x for x in targets for _ in all_pairs],
                      [p for _ in range(2) for p in all_pairs], RAW)
  by_pair = {p: (texts[k], texts[len(all_pairs) + k]) for k, p in enumerate(all_pairs)}
  # The rig favours the descriptions of one pair; pairs that wrote the same ones tie with it, and a tie goes
  # to the first pair of the sweep. A random tiny LM writes few distinct descriptions; it must write two.
  assert len(set(by_pair.values())) >= 2, "every pair wrote the same descriptions: the rig cannot tell them apart"
  # Favour descriptions the sweep's first pair did not write, so that "always the first pair" fails.
  other = next(by_pair[p] for p in reversed(all_pairs) if by_pair[p] != by_pair[all_pairs[0]])
  favoured = next(p for p in all_pairs if by_pair[p] == other)
  want = dict(zip(golds, by_pair[favoured]))
  calls = []

  def rigged(predictions, references):
    calls.append(len(predictions))
    return np.array([float(p == want[r]) for p, r in zip(predictions, references)])

  pair, table = ib.select_layers(lm, prompts, targets, golds, RAW, similarity_fn=rigged)
  assert pair == favoured
  assert calls == [2 * num * num]  # every (prompt, s, t) row, scored in one call
  assert [(r["source"], r["target"]) for r in table["pairs"]] == all_pairs
  assert table["best"] == {"source": favoured[0], "target": favoured[1], "score": 1.0}
  assert table["num_prompts"] == 2 and json.loads(json.dumps(table)) == table
  # A restricted sweep.
  narrow = ib.InspectConfig(batch_size=4, max_new_tokens=NEW, stop_strings=(), source_layers=(favoured[0],),
                            target_layers=(favoured[1], (favoured[1] + 1) % num))
  pair, table = ib.select_layers(lm, prompts, targets, golds, narrow, similarity_fn=rigged)
  assert pair == favoured and len(table["pairs"]) == 2


def test_selection_indices():
  cfg = ib.InspectConfig(num_select_prompts=5)
  picks = ib.selection_indices(20, cfg)
  assert len(picks) == 5 and list(picks) == sorted(set(picks.tolist())) and picks.max() < 20
  np.testing.assert_array_equal(picks, ib.selection_indices(20, cfg))
  assert list(ib.selection_indices(3, cfg)) == [0, 1, 2]
