"""The decoder's configuration: one frozen, hashable dataclass for every supported family.

Field names follow Hugging Face `config.json` where a field exists there; the family-specific switches
(`norm_plus_one`, `scale_embeddings`, `sandwich_norms`, ...) are derived by `translator.hf.config` from the
family. Being hashable, a `DecoderConfig` can be a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2")
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
LAYER_TYPES = ("full_attention", "sliding_attention")
ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling. `llama3` uses every field; `linear` only `factor`."""

  rope_type: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192

  def __post_init__(self):
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"rope_type {self.rope_type!r} is not supported; supported: {ROPE_TYPES}")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Everything the decoder needs to know about a model.

  Attributes (shapes use D = hidden_size, H = num_attention_heads, K = num_key_value_heads,
  Dh = head_dim, F = intermediate_size, V = vocab_size, L = num_hidden_layers):
    family: one of FAMILIES; informational, behaviour is set by the switches below.
    qkv_bias / o_bias: bias on q/k/v projections (Qwen2, Llama `attention_bias`) / on o_proj (Llama).
    mlp_bias: bias on gate/up/down projections (Llama `mlp_bias`).
    norm_plus_one: RMSNorm multiplies by (1 + w) instead of w (Gemma).
    scale_embeddings: the input embeddings (tokens and embedded prefix) are multiplied by sqrt(D) (Gemma).
    sandwich_norms: post-attention, pre- and post-feed-forward norms around each sublayer (Gemma 2).
    query_pre_attn_scalar: attention scale is this ** -0.5 instead of Dh ** -0.5 (Gemma 2).
    attn_logit_softcapping / final_logit_softcapping: cap * tanh(x / cap) on attention / output logits.
    sliding_window: window W of `sliding_attention` layers: a query at position q sees keys at k with
      q - W < k <= q.
    layer_types: per layer, "full_attention" or "sliding_attention"; length L.
    eos_token_ids: generation stops on any of these.

  Execution knobs (speed and compile time only, never the result; not part of the HF config):
    scan_unroll: decoder layers per iteration of the scan over layers; 1 compiles fastest, L unrolls fully
      (~10% faster training steps on the CPU).
    attention_query_blocks: without a KV cache, attention splits the queries into up to this many causal
      blocks of >= 64 queries, each scoring only the keys up to its end (4: ~20% faster training steps of a
      256-token row on the CPU).
  """

  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling = RopeScaling()
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = False
  hidden_act: str = "silu"
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  norm_plus_one: bool = False
  scale_embeddings: bool = False
  sandwich_norms: bool = False
  query_pre_attn_scalar: Optional[float] = None
  attn_logit_softcapping: Optional[float] = None
  final_logit_softcapping: Optional[float] = None
  sliding_window: Optional[int] = None
  layer_types: tuple[str, ...] = ()
  bos_token_id: Optional[int] = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: Optional[int] = None
  scan_unroll: int = 1
  attention_query_blocks: int = 4

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"family {self.family!r} is not supported; supported: {FAMILIES}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; supported: {ACTIVATIONS}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
          f"num_attention_heads={self.num_attention_heads} is not a multiple of "
          f"num_key_value_heads={self.num_key_value_heads}")
    if not self.layer_types:
      object.__setattr__(self, "layer_types", ("full_attention",) * self.num_hidden_layers)
    if len(self.layer_types) != self.num_hidden_layers:
      raise ValueError(
          f"layer_types has {len(self.layer_types)} entries, num_hidden_layers={self.num_hidden_layers}")
    for t in self.layer_types:
      if t not in LAYER_TYPES:
        raise ValueError(f"layer type {t!r} is not supported; supported: {LAYER_TYPES}")
    if "sliding_attention" in self.layer_types and not self.sliding_window:
      raise ValueError("layer_types has sliding_attention layers but sliding_window is not set")
    object.__setattr__(self, "eos_token_ids", tuple(int(i) for i in self.eos_token_ids))
    object.__setattr__(self, "layer_types", tuple(self.layer_types))

  @property
  def attention_scale(self) -> float:
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  def replace(self, **changes) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)
