"""Algorithm core: the masked-diffusion sampler with trajectory capture, step selection, advantages and the per-step objective (no I/O, no training loop)."""
