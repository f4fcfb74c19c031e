"""The model layer: tiny tokenizer and model, loaders (plain / LoRA / adapter dir), family facts, reference policy."""

from __future__ import annotations

import importlib.util
import json
import string
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoModelForMaskedLM, AutoTokenizer

from egspo.cli import main as cli_main
from egspo.models.diffusion_lm import DiffusionLM, is_peft_model, shift_logits_to_positions
from egspo.models.families import FAMILIES, LLADA_MASK_TOKEN_ID, detect_family
from egspo.models.loading import load_model, load_tokenizer, mask_token_id
from egspo.models.reference import ReferencePolicy, frozen_copy, reference_logits_context
from egspo.models.saving import atomic_output_dir, save_model
from egspo.models.tiny import build_tiny_model
from egspo.models.tokenizer import ALPHABET, build_char_tokenizer

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_len=48)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=3, **TINY)


def _randomize_lora(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _ids(n: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 54, (n, s), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_vocab_is_exactly_the_alphabet_plus_specials():
    tok = build_char_tokenizer()
    assert ALPHABET == string.digits + "+-*/()=.,:; " + string.ascii_lowercase
    assert len(tok) == 4 + 10 + 12 + 26 + 2 == 54
    assert (tok.pad_token_id, tok.mask_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for ch in ALPHABET:
        ids = tok(ch, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] >= 4, ch
    assert len({tok.convert_tokens_to_ids(c) for c in ALPHABET}) == len(ALPHABET)
    for tag in ("<answer>", "</answer>"):
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("text", [
    "countdown:12,34,56=78<answer>(12+34)*5</answer>",
    "  a . b ,  <answer> x</answer> ",
    "sudoku:1.3./..2.;4 1=<answer>1234</answer>",
    "",
])
def test_tokenizer_round_trip_one_token_per_character(tmp_path, text):
    build_char_tokenizer().save_pretrained(str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n_open, n_close = text.count("<answer>"), text.count("</answer>")
    assert len(ids) == len(text) - n_open * (len("<answer>") - 1) - n_close * (len("</answer>") - 1)
    assert tok.decode(ids) == text
    # EOS padding after the text disappears with skip_special_tokens and nothing else changes
    assert tok.decode(ids + [tok.eos_token_id] * 3, skip_special_tokens=True) == text


def test_tokenizer_unknown_characters_map_to_unk():
    tok = build_char_tokenizer()
    ids = tok("aQ\n%", add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("a")
    assert ids[1:] == [tok.unk_token_id] * 3


# ---------------------------------------------------------------------------------------------------- tiny model


def test_tiny_model_dir_loads_with_auto_classes(tiny_dir):
    model = AutoModelForMaskedLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    cfg = model.config
    assert type(model).__name__ == "ModernBertForMaskedLM"
    assert cfg.vocab_size == len(tok) == 54
    assert cfg.layer_types == ["full_attention"] * TINY["num_layers"]
    assert cfg.sparse_prediction is False
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (32, 2, 2, 64)
    assert cfg.pad_token_id == tok.pad_token_id and cfg.eos_token_id == tok.eos_token_id
    assert cfg.mask_token_id == tok.mask_token_id == 1
    # dense logits for every position even when MLM labels are passed
    ids = _ids(2, 7)
    labels = torch.full_like(ids, -100)
    labels[0, 3] = 5
    out = model(input_ids=ids, labels=labels)
    assert out.logits.shape == (2, 7, 54)


def test_build_is_deterministic_in_the_seed(tmp_path, tiny_dir):
    again = build_tiny_model(tmp_path / "again", seed=3, **TINY)
    other = build_tiny_model(tmp_path / "other", seed=4, **TINY)
    a, b, c = (AutoModelForMaskedLM.from_pretrained(p).state_dict() for p in (tiny_dir, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point)


def test_left_padding_does_not_change_logits_and_attention_is_bidirectional(tiny_dir):
    model = load_model(tiny_dir).eval()
    ids = _ids(3, 10)
    with torch.no_grad():
        plain = model(ids).logits
        pad = torch.zeros(3, 4, dtype=torch.long)
        padded_ids = torch.cat([pad, ids], dim=1)
        mask = torch.cat([torch.zeros(3, 4, dtype=torch.bool), torch.ones(3, 10, dtype=torch.bool)], dim=1)
        padded = model(padded_ids, mask).logits
        assert torch.isfinite(padded).all()
        torch.testing.assert_close(padded[:, 4:], plain, atol=1e-5, rtol=1e-5)
        # an unmasked garbage token at a padded position would change the result: the mask is really used
        junk = padded_ids.clone()
        junk[:, :4] = 7
        assert not torch.allclose(model(junk).logits[:, 4:], plain, atol=1e-4)
        # changing the last token changes the prediction at position 0 (no causal mask)
        ids2 = ids.clone()
        ids2[:, -1] = (ids2[:, -1] - 4 + 1) % 50 + 4
        assert not torch.allclose(model(ids2).logits[:, 0], plain[:, 0], atol=1e-6)


def test_sdpa_and_eager_attention_agree_with_padding(tiny_dir):
    sdpa = AutoModelForMaskedLM.from_pretrained(tiny_dir, attn_implementation="sdpa").eval()
    eager = AutoModelForMaskedLM.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    ids = _ids(4, 12, seed=1)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :5] = False
    mask[3, :2] = False
    with torch.no_grad():
        a = sdpa(input_ids=ids, attention_mask=mask).logits
        b = eager(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-5)


def test_bfloat16_load_runs_on_cpu(tiny_dir):
    model = load_model(tiny_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    out = model(_ids(2, 6)).logits
    assert out.dtype == torch.bfloat16 and out.shape == (2, 6, 54) and torch.isfinite(out.float()).all()
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_dir, dtype="fp8")


def test_build_model_cli(tmp_path):
    out = tmp_path / "cli_model"
    rc = cli_main(["build-model", "--out", str(out), "--hidden-size", "16", "--num-layers", "1", "--num-heads",
                   "2", "--intermediate-size", "32", "--max-len", "24", "--seed", "5"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["max_position_embeddings"]) == (16, 1, 24)
    assert not (tmp_path / "cli_model.tmp").exists()
    with pytest.raises(ValueError, match="multiple of num_heads"):
        build_tiny_model(tmp_path / "bad", hidden_size=30, num_heads=4)


# ---------------------------------------------------------------------------------------------------- LoRA


def test_lora_targets_every_projection_and_starts_at_the_base(tiny_dir):
    base = load_model(tiny_dir).eval()
    model = load_model(tiny_dir, lora={"r": 4, "alpha": 8, "dropout": 0.0}).eval()
    assert is_peft_model(model) and not is_peft_model(base)
    wrapped = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in model.model.named_parameters() if ".lora_A" in n})
    expected = sorted(f"base_model.model.model.layers.{i}.{m}" for i in range(TINY["num_layers"])
                      for m in ("attn.Wqkv", "attn.Wo", "mlp.Wi", "mlp.Wo"))
    assert wrapped == expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = _ids(2, 9)
    with torch.no_grad():  # B = 0 at init: the adapter starts as the identity
        torch.testing.assert_close(model(ids).logits, base(ids).logits)
    with pytest.raises(ValueError, match="unknown lora keys"):
        load_model(tiny_dir, lora={"rank": 4})


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8, "dropout": 0.0}])
def test_activation_checkpointing_keeps_the_gradients(tiny_dir, lora):
    grads = []
    for checkpointed in (False, True):
        model = load_model(tiny_dir, lora=lora).train()
        if lora:
            _randomize_lora(model)
        if checkpointed:
            model.enable_activation_checkpointing()
        layers_on = [getattr(m, "gradient_checkpointing", False) for m in model.modules()]
        assert any(layers_on) == checkpointed
        if lora:  # the frozen embeddings' output must require grad for the adapters' gradients to flow back
            assert model.get_input_embeddings()(_ids(1, 3)).requires_grad == checkpointed
        model(_ids(2, 9)).logits.square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all(g.abs().max() > 0 for g in grads[0].values())
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_adapter_dir_round_trip_and_reference_policy(tiny_dir, tmp_path):
    base = load_model(tiny_dir).eval()
    policy = load_model(tiny_dir, lora={"r": 4, "alpha": 8, "dropout": 0.0}).eval()
    _randomize_lora(policy)
    tok = load_tokenizer(tiny_dir)
    adapter_dir = save_model(policy, tmp_path / "adapter", tok)
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "config.json").exists()
    ids = _ids(3, 11, seed=2)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :3] = False
    with torch.no_grad():
        pol = policy(ids, mask).logits
        ref_truth = base(ids, mask).logits
    assert not torch.allclose(pol, ref_truth, atol=1e-3)  # the adapter matters

    reloaded = load_model(adapter_dir, is_trainable=False).eval()
    assert reloaded.family.name == "modernbert" and is_peft_model(reloaded)
    assert not any(p.requires_grad for p in reloaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, mask).logits, pol)
    assert any(p.requires_grad for p in load_model(adapter_dir).parameters())  # resume: trainable
    assert load_tokenizer(adapter_dir).mask_token_id == tok.mask_token_id

    ref = ReferencePolicy(policy)
    assert ref.uses_adapter
    torch.testing.assert_close(ref(ids, mask), ref_truth)
    with torch.no_grad():  # the adapter is back on after the reference forward
        torch.testing.assert_close(policy(ids, mask).logits, pol)
        with reference_logits_context(policy) as m:
            torch.testing.assert_close(m(ids, mask).logits, ref_truth)

    with pytest.raises(ValueError, match="LoRA"):
        ReferencePolicy(base)
    with pytest.raises(ValueError, match="LoRA"):
        with reference_logits_context(base):
            pass
    with pytest.raises(ValueError, match="trainable"):
        ReferencePolicy(frozen=base)
    frozen = ReferencePolicy(frozen=frozen_copy(base))
    assert not frozen.uses_adapter
    torch.testing.assert_close(frozen(ids, mask), ref_truth)


# ---------------------------------------------------------------------------------------------------- families


class _RecordingAR(nn.Module):
    """Stands in for an AR-initialised model: logits[:, i] = one-hot of input token i+1 (the next token)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.calls: list[dict] = []

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        self.calls.append({"attention_mask": attention_mask, "position_ids": position_ids})
        nxt = torch.roll(input_ids, shifts=-1, dims=1)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float())


def test_dream_logits_are_realigned_and_padding_follows_dreams_convention():
    stub = _RecordingAR(vocab=20)
    model = DiffusionLM(stub, FAMILIES["dream"])
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 11, 12, 13]])
    out = model(ids).logits
    # after the shift, position i >= 1 predicts its own token
    assert torch.equal(out[:, 1:].argmax(-1), ids[:, 1:])
    assert stub.calls[-1]["attention_mask"] == "full" and stub.calls[-1]["position_ids"] is None
    mask = ids != 0
    model(ids, mask)
    call = stub.calls[-1]
    assert call["attention_mask"].shape == (2, 1, 5, 5)
    assert torch.equal(call["attention_mask"][1, 0, 3], torch.tensor([False, False, True, True, True]))
    assert torch.equal(call["position_ids"], torch.tensor([[0, 1, 2, 3, 4], [1, 1, 0, 1, 2]]))
    x = torch.arange(24.0).view(1, 4, 6)
    assert torch.equal(shift_logits_to_positions(x)[0, :, 0], torch.tensor([0.0, 0.0, 6.0, 12.0]))


def test_mask_token_ids_per_family(tiny_dir):
    assert mask_token_id(load_tokenizer(tiny_dir)) == 1
    assert mask_token_id(load_model(tiny_dir)) == 1
    assert mask_token_id(SimpleNamespace(model_type="llada")) == LLADA_MASK_TOKEN_ID == 126336
    assert mask_token_id(SimpleNamespace(name_or_path="GSAI-ML/LLaDA-8B-Instruct", mask_token_id=None)) == 126336
    assert mask_token_id(SimpleNamespace(name_or_path="Dream-org/Dream-v0-Instruct-7B", mask_token_id=151666)) \
        == 151666
    with pytest.raises(ValueError, match="no mask token"):
        mask_token_id(SimpleNamespace(name_or_path="x", mask_token_id=None))


def test_mask_token_id_of_a_local_llada_copy(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llada", "architectures": ["LLaDAModelLM"]}))
    tokenizer_like = SimpleNamespace(name_or_path=str(tmp_path), mask_token_id=None)
    assert mask_token_id(tokenizer_like) == LLADA_MASK_TOKEN_ID
    assert detect_family(tmp_path).name == "llada"


def test_family_registry_facts(tiny_dir, tmp_path):
    llada, dream = detect_family("GSAI-ML/LLaDA-8B-Instruct"), detect_family("Dream-org/Dream-v0-Instruct-7B")
    assert (llada.name, llada.auto_class, llada.trust_remote_code, llada.shift_logits) == ("llada", "AutoModel",
                                                                                          True, False)
    assert (dream.name, dream.auto_class, dream.trust_remote_code, dream.shift_logits) == ("dream", "AutoModel",
                                                                                          True, True)
    assert detect_family(tiny_dir).name == "modernbert"
    import re

    pattern = re.compile(llada.lora_target_modules)  # peft full-matches a regex against module names
    assert pattern.fullmatch("model.transformer.blocks.3.ff_out")
    assert pattern.fullmatch("model.transformer.blocks.0.attn_out")
    assert not pattern.fullmatch("model.transformer.ff_out")  # the LM head stays frozen
    with pytest.raises(ValueError, match="not a local model"):
        detect_family(tmp_path / "nothing")
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="unknown model family"):
        detect_family(tmp_path / "weird")


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_quantize_4bit_without_bitsandbytes_is_a_clear_error(tiny_dir):
    with pytest.raises(ImportError, match="bitsandbytes"):
        load_model(tiny_dir, quantize_4bit=True)


def test_atomic_output_dir_keeps_the_old_dir_on_error(tmp_path):
    out = tmp_path / "d"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "1" and not (tmp_path / "d.tmp").exists()
    with atomic_output_dir(out) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and sorted(p.name for p in out.iterdir()) == ["b.txt"]
