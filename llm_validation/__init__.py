"""The perturbation / fine-tuning protocol on transformer language models (PyTorch + transformers).

The torch modules never import jax; the JAX twin of the perturbation half lives in ``jax_backend``
and never imports torch (both kept by the import-linter contracts in pyproject.toml). Modules take
models, tensors and plain parameters and return numbers; files are touched only by the checkpoint
loaders and savers.
"""
