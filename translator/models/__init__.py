"""Flax decoder LM with Hugging Face attribute names, its configuration, and generation."""

from translator.models.config import DecoderConfig, RopeScaling
