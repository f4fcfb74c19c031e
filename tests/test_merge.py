"""``egspo merge``: the merged plain model computes what the base + adapter computed."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from egspo.cli import main as cli_main
from egspo.models.merge import merge_adapter
from egspo.models.loading import load_model, load_tokenizer
from egspo.models.saving import save_model
from egspo.models.tiny import build_tiny_model

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_len=32)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    base_dir = build_tiny_model(root / "base", seed=1, **TINY)
    policy = load_model(base_dir, lora={"r": 4, "alpha": 16, "dropout": 0.0})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    adapter_dir = save_model(policy, root / "adapter", load_tokenizer(base_dir))
    return base_dir, adapter_dir, policy.eval()


def test_merged_logits_equal_the_adapter_models(adapter, tmp_path):
    base_dir, adapter_dir, policy = adapter
    out = tmp_path / "merged"
    assert cli_main(["merge", "--adapter", str(adapter_dir), "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert not (tmp_path / "merged.tmp").exists()
    merged = AutoModelForMaskedLM.from_pretrained(out).eval()
    assert not any("lora" in k for k in merged.state_dict())
    assert AutoTokenizer.from_pretrained(out).mask_token_id == 1
    ids = torch.randint(4, 54, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2, :4] = False
    with torch.no_grad():
        expected = policy(ids, mask).logits
        got = merged(input_ids=ids, attention_mask=mask).logits
        base = AutoModelForMaskedLM.from_pretrained(base_dir).eval()(input_ids=ids, attention_mask=mask).logits
    assert (expected - base).abs().max() > 1e-2  # the adapter changes the function, so equality means something
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-4)


def test_merge_with_explicit_base_and_bad_adapter(adapter, tmp_path):
    base_dir, adapter_dir, policy = adapter
    moved = tmp_path / "moved_base"
    shutil.copytree(base_dir, moved)
    out = merge_adapter(adapter_dir, tmp_path / "m2", base=moved)
    ids = torch.randint(4, 54, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(load_model(out).eval()(ids).logits, policy(ids).logits, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="adapter_config.json"):
        merge_adapter(base_dir, tmp_path / "m3")
