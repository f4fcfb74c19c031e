"""EGSPO / EGSPO-SA: reinforcement learning for masked diffusion LLMs with entropy-guided step selection and
stepwise advantages (arXiv 2603.12554)."""

__version__ = "0.1.0"
