"""Flax decoder LM with Hugging Face attribute names, its configuration, and generation."""

from translator.models.config import DecoderConfig, RopeScaling
from translator.models.decoder import CausalLM, DecoderOutput, KVCache, Patch
from translator.models.sampler import SampleOutput, sample
