"""The JAX backend of the perturbation protocol: OLMo-1 in flax.nnx, read from the same safetensors
checkpoints as the torch half, and many Gaussian draws evaluated in one compiled call.

    spec        config.json read as JSON (no transformers): ``OlmoSpec``
    model       the OLMo-1 forward pass as transformers implements it, in flax.nnx
    weights     where a checkpoint's files are (folder series, hub cache) and its safetensors as arrays
    perturb     theta~_p = theta_p + gamma * sigma_p * eps_p with the torch half's semantics
    evaluate    held-out perplexity of K draws, vmapped over draws, chunked, sharded over devices

Never imports torch or transformers (the import-linter contracts in pyproject.toml), so a TPU host
needs neither.
"""
