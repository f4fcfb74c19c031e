"""The algorithm's semantics: ``fidelity: authors | principled`` and one named setting per difference.

Each setting below changes one thing and can be toggled alone; ``semantics_for(mode, **overrides)`` gives the
mode's values with some of them overridden. What each one reproduces, with the authors' file and line, is in
docs/fidelity.md; ``egspo fidelity check`` proves the ``authors`` values number for number.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

FIDELITY_MODES = ("authors", "principled")


@dataclass(frozen=True)
class Setting:
    """One difference: its allowed values, the value in each mode and a one-line help text."""

    allowed: tuple
    authors: object
    principled: object
    help: str


SETTINGS: dict[str, Setting] = {
    "kl_form": Setting(
        ("token_mean", "step_sum"), "step_sum", "token_mean",
        "KL per selected step: step_sum = k3 of the step's summed log-prob difference / exact KL summed over the "
        "step's tokens (authors); token_mean = mean over the step's tokens of a per-token KL"),
    "loss_scale": Setting(
        ("none", "tokens_per_step"), "tokens_per_step", "none",
        "divide each row's surrogate + beta * KL by the tokens per step L // T (authors) or not"),
    "column_order": Setting(
        ("time", "entropy_rank"), "entropy_rank", "time",
        "order of a trajectory's selected steps; group advantages are centred per column (entropy_rank: column 0 = "
        "highest entropy, as the authors)"),
    "update_schedule": Setting(
        ("per_column", "authors"), "authors", "per_column",
        "authors: one rollout per K micro-steps, micro-step m trains column (m + 1) mod K, an optimizer step every "
        "grad_accum micro-steps; per_column: one optimizer step per column over the whole rollout"),
    "reward_text": Setting(
        ("first_eos", "full"), "full", "first_eos",
        "text a reward sees: full = the whole completion decoded with special tokens skipped (authors); first_eos = "
        "cut at the first EOS"),
    "selection_variant": Setting(
        ("principled", "authors"), "authors", "principled",
        "uniform / random step selection: authors = linspace(0, T-2, K-1) / K-1 draws with replacement, plus T-1, "
        "one row for the batch; principled = segment midpoints / K distinct steps per trajectory"),
    "attend_to_pads": Setting(
        (True, False), True, False, "call the model without an attention mask, so left pads are attended (authors)"),
    "gumbel_in_model_dtype": Setting(
        (True, False), True, False,
        "Gumbel-max noise drawn and applied in the model's dtype (bf16 on the authors' GPUs) instead of float32/64"),
    "rollout_dropout": Setting(
        (True, False), True, False, "keep LoRA dropout active while sampling rollouts (authors: model in train mode)"),
    "single_step_ratio_one": Setting(
        (True, False), True, False,
        "with K = 1 use the current log-prob (detached) as the old one, so the ratio is always 1 (authors)"),
    "entropy_eps": Setting(
        (0.0, 1e-8), 1e-8, 0.0, "step entropy -sum p log(p + eps): the authors use eps = 1e-8"),
    "kl_log_eps": Setting(
        (0.0, 1e-10), 1e-10, 0.0, "exact KL with logs taken as log(softmax + eps): the authors use eps = 1e-10"),
    "old_logprob_float32": Setting(
        (True, False), True, False, "store the rollout-time step log-probs in float32 (authors) or the model dtype"),
}


@dataclass(frozen=True)
class Semantics:
    """Resolved values of every setting in `SETTINGS` (see their help texts)."""

    kl_form: str
    loss_scale: str
    column_order: str
    update_schedule: str
    reward_text: str
    selection_variant: str
    attend_to_pads: bool
    gumbel_in_model_dtype: bool
    rollout_dropout: bool
    single_step_ratio_one: bool
    entropy_eps: float
    kl_log_eps: float
    old_logprob_float32: bool

    def __post_init__(self) -> None:
        for f in fields(self):
            value, setting = getattr(self, f.name), SETTINGS[f.name]
            if value not in setting.allowed or type(value) is not type(setting.allowed[0]):
                raise ValueError(f"fidelity setting {f.name}={value!r} is not one of {list(setting.allowed)}")

    def loss_divisor(self, gen_length: int, steps: int) -> float:
        """What each row's loss is divided by: ``L // T`` under ``loss_scale="tokens_per_step"`` (the authors'
        integer division), else 1."""
        if self.loss_scale == "none":
            return 1.0
        per_step = gen_length // steps
        if per_step < 1:
            raise ValueError(f"loss_scale=tokens_per_step needs L >= T, got L={gen_length}, T={steps}")
        return float(per_step)

    def sampler_options(self) -> dict:
        """The `egspo.core.sampler.SamplerConfig` fields this mode sets."""
        return {"attend_to_pads": self.attend_to_pads, "entropy_eps": self.entropy_eps,
                "gumbel_in_model_dtype": self.gumbel_in_model_dtype}


def semantics_for(mode: str, **overrides) -> Semantics:
    """The values of ``mode`` (``authors`` or ``principled``), each override replacing one setting."""
    if mode not in FIDELITY_MODES:
        raise ValueError(f"fidelity must be one of {FIDELITY_MODES}, got {mode!r}")
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown fidelity setting(s) {unknown}; known: {sorted(SETTINGS)}")
    values = {name: getattr(s, mode) for name, s in SETTINGS.items()}
    values.update(overrides)
    return Semantics(**values)
