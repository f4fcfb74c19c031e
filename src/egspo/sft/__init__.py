"""Masked-diffusion supervised warm start (SFT)."""
