"""`GradcheckConfig`: every setting of `egspo gradcheck`, defined once (`egspo.settings.setting`); its flags and the
config schema's ``gradcheck`` block are derived from it."""

from __future__ import annotations

from dataclasses import dataclass

from egspo.settings import setting


@dataclass
class GradcheckConfig:
    """Every setting of `egspo gradcheck`; CLI flags are these names with '-' for '_'."""

    out: str = setting(help="CSV file to write (one row per estimator variant)", config="workflow")
    seed: int = setting(0, help="seed of the policy weights and the reward table", minimum=0, config="gradcheck")
    vocab: int = setting(3, help="number of real tokens V (plus the mask token)", minimum=1, config="gradcheck")
    length: int = setting(3, help="completion length L", minimum=1, config="gradcheck")
    steps: int | None = setting(None, help="denoising steps T (unset: L)", minimum=1, config="gradcheck")
    block_length: int | None = setting(None, help="block length B (unset: L)", minimum=1, config="gradcheck")
    prompt_length: int = setting(1, help="prompt tokens", minimum=1, config="gradcheck")
    hidden: int = setting(8, help="hidden units of the policy MLP", minimum=1, config="gradcheck")
    embed_dim: int = setting(3, help="token/position embedding size", minimum=1, config="gradcheck")
    reward: str = setting("table", help="table: fixed random reward per completion; match: positions equal to "
                                        "0,1,2,...", choices=("table", "match"), config="gradcheck")
    k: list[int] | None = setting(None, help="K < T for the K-step selectors (unset: 1..T-1)", minimum=1,
                                  config="gradcheck")
    lams: list[float] = setting([0.0, 0.5, 1.0, 2.0], help="lambda values of the stepwise return", minimum=0,
                                config="gradcheck")


__all__ = ["GradcheckConfig"]
