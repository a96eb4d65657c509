"""Hugging Face checkpoints: config validation and safetensors weight import."""

from translator.hf.config import from_hf_dict, read_config
