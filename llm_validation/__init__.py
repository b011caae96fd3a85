"""The perturbation / fine-tuning protocol on transformer language models (PyTorch + transformers).

Never imports jax. Modules take models, tensors and plain parameters and return numbers; files are
touched only by the checkpoint loaders and savers.
"""
