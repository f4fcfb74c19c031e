"""`fidelity: authors | principled`, its named settings, the authors' micro-step schedule and the text / prompt
helpers the authors' recipe uses."""

from types import SimpleNamespace

import pytest

from egspo.core.generation_io import decode_completions, keep_last_tokens
from egspo.core.schedule import authors_micro_steps, optimizer_steps_per_rollout
from egspo.core.semantics import SETTINGS, Semantics, semantics_for


def test_modes_and_single_overrides():
    authors, principled = semantics_for("authors"), semantics_for("principled")
    for name, spec in SETTINGS.items():
        assert getattr(authors, name) == spec.authors and getattr(principled, name) == spec.principled
        assert spec.authors != spec.principled and spec.help  # every setting is a real difference
        one = semantics_for("principled", **{name: spec.authors})
        changed = [n for n in SETTINGS if getattr(one, n) != getattr(principled, n)]
        assert changed == [name]  # toggled alone
    assert authors.loss_divisor(256, 128) == 2.0 and principled.loss_divisor(256, 128) == 1.0
    assert authors.loss_divisor(10, 4) == 2.0  # the authors' integer division L // T
    assert authors.sampler_options() == {"attend_to_pads": True, "entropy_eps": 1e-8, "gumbel_in_model_dtype": True}
    with pytest.raises(ValueError, match="fidelity must be one of"):
        semantics_for("exact")
    with pytest.raises(ValueError, match=r"unknown fidelity setting\(s\) \['kl_forms'\]"):
        semantics_for("authors", kl_forms="step_sum")
    with pytest.raises(ValueError, match="kl_form='bogus'"):
        semantics_for("authors", kl_form="bogus")
    with pytest.raises(ValueError, match="attend_to_pads=1"):
        semantics_for("authors", attend_to_pads=1)
    with pytest.raises(ValueError, match="L >= T"):
        authors.loss_divisor(4, 8)
    assert isinstance(authors, Semantics)


def test_authors_micro_steps_hand_trace():
    """Counter s: a rollout when s % (K * repeats) == 0, then s += 1 before the loss reads column s % K."""
    steps = authors_micro_steps(4, 2, 1, 9)
    assert [s.column for s in steps] == [1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [s.new_rollout for s in steps] == [True, False, False, False, True, False, False, False, True]
    assert [s.rollout for s in steps] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert [s.optimizer_step_after for s in steps] == [False, True] * 4 + [False]
    twice = authors_micro_steps(2, 1, 2, 5)  # num_gradient_steps 2: the columns cycle twice per rollout
    assert [s.column for s in twice] == [1, 0, 1, 0, 1] and [s.rollout for s in twice] == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="grad_accum"):
        authors_micro_steps(4, 0, 1, 3)


def test_optimizer_steps_per_rollout():
    assert optimizer_steps_per_rollout("authors", 8, 2) == [[1, 2], [3, 4], [5, 6], [7, 0]]
    assert optimizer_steps_per_rollout("authors", 4, 4) == [[1, 2, 3, 0]]
    assert optimizer_steps_per_rollout("authors", 3, 1) == [[1], [2], [0]]
    assert optimizer_steps_per_rollout("per_column", 3, 2) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="columns per optimizer step = 3"):
        optimizer_steps_per_rollout("authors", 8, 3)
    with pytest.raises(ValueError, match="update_schedule"):
        optimizer_steps_per_rollout("weekly", 8, 2)


class _Tok(SimpleNamespace):
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i) for i in ids if not (skip_special_tokens and i == self.eos_token_id))


def test_reward_text_and_prompt_truncation():
    tok = _Tok(eos_token_id=9)
    rows = [[0, 1, 9, 2, 9], [3, 4, 5, 6, 7]]
    assert decode_completions(tok, rows) == ["ab", "defgh"]  # cut at the first EOS
    assert decode_completions(tok, rows, cut_at_eos=False) == ["abc", "defgh"]  # the authors keep what follows
    assert keep_last_tokens([[1, 2, 3, 4], [5]], 2) == [[3, 4], [5]]
    assert keep_last_tokens([[1, 2]], None) == [[1, 2]]
    with pytest.raises(ValueError, match="max_length"):
        keep_last_tokens([[1]], 0)
