"""Bias of each gradient estimator after the scale it is unbiased up to.

With ``g = grad J`` and ``g_hat = E[g]`` (exact, `egspo gradcheck`), r = |g_hat| / |g| and cos = cos(g_hat, g):

- the relative error of ``c g_hat`` is ``e(c) = |c g_hat - g| / |g| = sqrt(c^2 r^2 - 2 c r cos + 1)``;
- the best scalar ``c* = argmin_c e(c) = cos / r`` leaves ``e(c*) = sqrt(1 - cos^2)`` (the direction error alone);
- the known scale: a uniformly random K of T steps keeps each step with probability K/T, so
  ``E[g_hat] = (K/T) grad J`` and ``c = T/K`` removes the bias; every other selection is taken at ``c = 1``
  (entropy or uniform top-K have no scale that makes them unbiased).

A random-K row with cosine 1 and relative error 1 - K/T is therefore exact after scaling, not biased.
"""

from __future__ import annotations

import math

import pandas as pd

REQUIRED = ("selection", "k", "cosine", "rel_error", "grad_norm", "estimate_norm")


def known_scale(selection: str, k: int, steps: int) -> float:
    """The scale an estimator is unbiased up to: T/K for uniformly random K-of-T selection, else 1."""
    return steps / k if selection == "random" else 1.0


def scaled_error(cosine: float, ratio: float, scale: float) -> float:
    """``|scale * g_hat - g| / |g|`` from cos(g_hat, g) and r = |g_hat| / |g|."""
    return math.sqrt(max(0.0, scale * scale * ratio * ratio - 2.0 * scale * ratio * cosine + 1.0))


def add_scaled_bias(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with columns ``known_scale`` (T/K or 1), ``rel_error_known_scale``, ``best_scale`` (c*) and
    ``rel_error_best_scale``; T is the K of the ``all`` rows."""
    missing = [c for c in REQUIRED if c not in df]
    if missing:
        raise ValueError(f"gradcheck table lacks column(s) {missing} (rerun egspo gradcheck for estimate_norm)")
    all_k = sorted(set(df.loc[df["selection"] == "all", "k"]))
    if len(all_k) != 1:
        raise ValueError(f"gradcheck table needs 'all' rows with one K (= T) to know T, found K values {all_k}")
    steps = int(all_k[0])
    out = df.copy()
    ratio = out["estimate_norm"] / out["grad_norm"]
    out["known_scale"] = [known_scale(s, int(k), steps) for s, k in zip(out["selection"], out["k"])]
    out["rel_error_known_scale"] = [scaled_error(c, r, s) for c, r, s in
                                    zip(out["cosine"], ratio, out["known_scale"])]
    out["best_scale"] = [c / r if r > 0 else math.nan for c, r in zip(out["cosine"], ratio)]
    out["rel_error_best_scale"] = [math.sqrt(max(0.0, 1.0 - c * c)) for c in out["cosine"]]
    return out


__all__ = ["add_scaled_bias", "known_scale", "scaled_error"]
