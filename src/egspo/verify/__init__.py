"""Verification by exact enumeration: exact policy gradients and estimator bias / variance (gradcheck)."""
