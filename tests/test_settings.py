"""Stage settings defined once (egspo.settings): every RL / SFT setting reachable from config.yaml, the derived forms
(schema file, CLI flags, defaults, value checks) agreeing with the dataclasses, and the workflow validating a config
with the code the stages run (the sampler's steps-per-block rule included)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from egspo.rl.command import configure as configure_rl
from egspo.rl.config import RLConfig
from egspo.settings import (
    check_values,
    choices_of,
    config_fields,
    default_of,
    field_type,
    is_list,
    settings_fields,
    validate_rl,
    validate_sft,
)
from egspo.settings_schema import SCHEMA_PATH, generated_defs, updated
from egspo.sft.config import SFTConfig
from egspo.sft.trainer import configure as configure_sft
from egspo.verify.gradcheck import configure as configure_gradcheck
from egspo.verify.gradcheck_config import GradcheckConfig
from egspo.workflow.checks import check_config
from egspo.workflow.config import ConfigError
from egspo.workflow.plan import Plan
from egspo.workflow.shell import flags, rl_args, sft_args

REPO = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO / "config.yaml").read_text())
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
VALIDATOR = Draft202012Validator(SCHEMA)  # what `snakemake.utils.validate` runs, built once


def schema_validate(raw: dict) -> None:
    VALIDATOR.validate(raw)


def parser_of(configure) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser


def other_value(f: dataclasses.Field):
    """A valid value of field ``f`` that differs from its default."""
    base, _ = field_type(f)
    allowed = choices_of(f)
    if is_list(f):
        return [1, 2] if base is int else [0.25]
    if allowed is not None:
        return next(v for v in allowed if v != f.default)
    if base is bool:
        return not f.default
    m = f.metadata
    if base is int:
        return 3 if f.default in (None, dataclasses.MISSING) else f.default + 1
    if base is str:
        return "field_x"
    upper = m["maximum"] if m["maximum"] is not None else m["exclusive_maximum"]
    start = 0.5 if f.default in (None, dataclasses.MISSING) else f.default
    value = start / 2 if upper is not None and start * 1.5 >= upper else start * 1.5 + 0.125
    return value


def config_with(keep_task_settings: bool = True, **top) -> dict:
    """config.yaml's tiny preset (without its per-task settings when not ``keep_task_settings``) with top-level
    overrides; validated against the schema file."""
    raw = copy.deepcopy(RAW)
    if not keep_task_settings:
        raw["presets"][raw["preset"]]["task_settings"] = {}
    raw.update(copy.deepcopy(top))
    schema_validate(raw)
    return raw


def rl_config_of(raw: dict, method: str = "egspo") -> RLConfig:
    plan = Plan.from_raw(raw)
    task = plan.rl_tasks[0]
    argv = shlex.split(rl_args(plan, task, method, 0))
    assert argv[0] == "rl"
    return RLConfig.from_namespace(parser_of(configure_rl).parse_args(argv[1:]))


def sft_config_of(raw: dict) -> SFTConfig:
    plan = Plan.from_raw(raw)
    argv = shlex.split(sft_args(plan, plan.sft_task(plan.tasks[0]), 0))
    assert argv[0] == "sft"
    return SFTConfig.from_namespace(parser_of(configure_sft).parse_args(argv[1:]))


# ---- the schema file and the dataclasses ----------------------------------------------------------------------------


def test_schema_file_equals_the_one_generated_from_the_settings():
    text = SCHEMA_PATH.read_text()
    assert updated(text) == text, "run: python -m egspo.settings_schema"


@pytest.mark.parametrize("cls, block, defs", [(RLConfig, "rl", "rl_params"), (SFTConfig, "sft", "sft_params"),
                                             (GradcheckConfig, "gradcheck", "gradcheck_params")])
def test_schema_enums_and_ranges_equal_the_dataclass(cls, block, defs):
    props = SCHEMA["$defs"][defs]["properties"]
    expected = {f.name for f in config_fields(cls, block)} - {"algorithm"}
    assert set(props) == expected
    for f in config_fields(cls, block):
        if f.name == "algorithm":
            assert SCHEMA["$defs"]["algorithm"]["enum"] == list(choices_of(f))
            continue
        prop = props[f.name]
        prop = next(p for p in prop["oneOf"] if p != {"type": "null"}) if "oneOf" in prop else prop
        prop = prop["items"] if is_list(f) else prop
        assert prop.get("enum") == (list(choices_of(f)) if choices_of(f) is not None else None), f.name
        for meta, key in (("minimum", "minimum"), ("maximum", "maximum"), ("exclusive_minimum", "exclusiveMinimum"),
                          ("exclusive_maximum", "exclusiveMaximum")):
            assert prop.get(key) == f.metadata[meta], f"{f.name}.{key}"
    assert SCHEMA["$defs"]["dtype"]["enum"] == list(choices_of(next(f for f in settings_fields(RLConfig)
                                                                    if f.name == "dtype")))
    assert generated_defs()["style"]["enum"] == ["tiny", "d1"]


@pytest.mark.parametrize("cls, configure", [(RLConfig, configure_rl), (SFTConfig, configure_sft),
                                            (GradcheckConfig, configure_gradcheck)])
def test_cli_defaults_and_choices_equal_the_dataclass(cls, configure):
    parser = parser_of(configure)
    actions = {a.dest: a for a in parser._actions}
    for f in settings_fields(cls):
        action = actions[f.name]
        assert action.option_strings == ["--" + f.name.replace("_", "-")]
        if default_of(f) is dataclasses.MISSING:
            assert action.required, f.name
        else:
            assert action.default == default_of(f), f.name
        if choices_of(f) is not None and field_type(f)[0] is str:
            assert tuple(action.choices) == choices_of(f), f.name


def test_every_field_is_placed_in_config_yaml_or_says_why_not():
    places = {"rl", "sft", "gradcheck", "workflow"}
    for cls in (RLConfig, SFTConfig, GradcheckConfig):
        for f in settings_fields(cls):
            where = f.metadata["config"]
            assert where in places or (where or "").startswith("model.") or (
                where is None and "command line only" in f.metadata["help"]), f"{cls.__name__}.{f.name}: {where}"


# ---- reachability: config.yaml -> schema -> workflow flags -> the stage's config object ---------------------------


@pytest.mark.parametrize("name", [f.name for f in config_fields(RLConfig, "rl")])
def test_every_rl_setting_reaches_egspo_rl_from_config_yaml(name):
    f = next(f for f in settings_fields(RLConfig) if f.name == name)
    value = other_value(f)
    if name == "algorithm":  # a method's own key
        raw = config_with(methods={"m": {"algorithm": value}}, compare=["sft", "m"])
        assert rl_config_of(raw, "m").algorithm == value
        return
    methods = RAW["presets"]["tiny"]["methods"]
    probe = {"algorithm": "egspo"}  # a method that sets nothing else, so the shared blocks reach it
    for top in ({"rl": {name: value}, "methods": {**methods, "probe": probe}},
                {"task_settings": {"sudoku": {"rl": {name: value}}}, "methods": {**methods, "probe": probe}},
                {"methods": {**methods, "probe": {**probe, name: value}}}):
        cfg = rl_config_of(config_with(keep_task_settings=False, **top), "probe")
        assert getattr(cfg, name) == value, (top, getattr(cfg, name))


@pytest.mark.parametrize("name", [f.name for f in config_fields(SFTConfig, "sft")])
def test_every_sft_setting_reaches_egspo_sft_from_config_yaml(name):
    f = next(f for f in settings_fields(SFTConfig) if f.name == name)
    value = other_value(f)
    cfg = sft_config_of(config_with(sft={name: value}))
    assert getattr(cfg, name) == value


@pytest.mark.parametrize("name", [f.name for f in config_fields(GradcheckConfig, "gradcheck")])
def test_every_gradcheck_setting_reaches_egspo_gradcheck_from_config_yaml(name):
    f = next(f for f in settings_fields(GradcheckConfig) if f.name == name)
    value = other_value(f)
    C = Plan.from_raw(config_with(gradcheck={name: value})).C
    argv = ["--out", "g.csv", *shlex.split(flags(C["gradcheck"]))]  # as workflow/rules/eval.smk passes them
    cfg = GradcheckConfig(**vars(parser_of(configure_gradcheck).parse_args(argv)))
    assert getattr(cfg, name) == value
    check_values(cfg)


def test_model_block_settings_reach_both_stages():
    model = {"kind": "pretrained", "path": "some/model", "dtype": "bfloat16", "trust_remote_code": True,
             "quantize_4bit": True, "lora": {"r": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": ["q", "v"]}}
    raw = config_with(model=model, data={"source": "tiny", "seed": 0})
    rl, sft = rl_config_of(raw), sft_config_of(raw)
    for cfg, four_bit in ((rl, rl.load_in_4bit), (sft, sft.quantize_4bit)):
        assert (cfg.dtype, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, four_bit) == \
            ("bfloat16", 8, 16.0, 0.1, "q,v", True)
    assert rl.trust_remote_code is True and sft.model == "some/model"
    for cls in (RLConfig, SFTConfig):  # every model.* location names a key the schema's model block has
        for f in settings_fields(cls):
            where = f.metadata["config"] or ""
            if where.startswith("model."):
                node = SCHEMA["$defs"]["model"]
                for part in where.split(".")[1:]:
                    node = node["properties"][part]
                assert node, where


def test_workflow_fields_are_filled_in_by_the_workflow():
    cfg = rl_config_of(config_with())
    assert cfg.task == "sudoku" and cfg.seed == 0 and cfg.on_settings_change == "restart"
    assert cfg.style == RAW["presets"]["tiny"]["style"] and cfg.out and cfg.train and cfg.model
    sft = sft_config_of(config_with())
    assert sft.task == "sudoku" and sft.format == "task" and sft.out and sft.train


# ---- validation: the stage's checks, run by the workflow ------------------------------------------------------------


def test_steps_per_block_rule_is_caught_before_any_job():
    # L = 8, B = 4: 2 blocks; T = 16 is a multiple of 2 but gives 8 steps per 4-token block (the sampler's rule).
    raw = copy.deepcopy(RAW)
    raw.update({"task_settings": {}, "rl": {"gen_length": 8, "block_length": 4, "steps": 16, "k": 2}})
    schema_validate(raw)
    with pytest.raises(ConfigError, match=r"methods\.\w+.*steps=16 gives 8 steps per block"):
        check_config(Plan.from_raw(raw))


@pytest.mark.parametrize("settings, message", [
    ({"eps_low": 1.0}, r"eps_low is out of range \[0, 1\)"),
    ({"lam": float("inf")}, "lam is out of range"),
    ({"k": True}, "k must be a int"),
    ({"selection": "best"}, "selection must be one of"),
    ({"algorithm": "ppo"}, "algorithm must be one of"),
    ({"kk": 1}, "unknown setting 'kk'"),
    ({"steps": 3}, "not a multiple of the number of blocks"),
])
def test_validate_rl_names_the_bad_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        validate_rl(settings, where="rl")
    assert validate_rl({"k": 2}).k == 2  # the same object egspo rl would build


def test_schema_and_stage_agree_on_eps_low_one():
    raw = copy.deepcopy(RAW)
    raw["rl"] = {"eps_low": 1}
    with pytest.raises(Exception, match="eps_low|1"):
        schema_validate(raw)


def test_workflow_validation_needs_no_torch(tmp_path):
    # Snakemake validates at DAG time without importing torch (tests/test_paper_path.py blocks it there too).
    import subprocess
    import sys

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch imported at DAG time')\n")
    code = ("from egspo.settings import validate_rl, validate_sft; import egspo.workflow.checks; "
            "from egspo.settings_schema import main; "
            "assert validate_rl({'k': 2, 'gen_length': 8, 'steps': 4, 'block_length': 4}).k == 2; "
            "validate_sft({'gen_length': 8, 'max_steps': 1, 'batch_size': 1, 'lr': 0.1}); "
            "raise SystemExit(main(['--check']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]


def test_validate_sft_runs_the_stage_checks():
    assert validate_sft({"gen_length": 8, "max_steps": 2, "batch_size": 2, "lr": 1e-3}).lr == 1e-3
    with pytest.raises(ValueError, match=r"sft: warmup_ratio is out of range"):
        validate_sft({"gen_length": 8, "max_steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_ratio": 1.0})
    with pytest.raises(ValueError, match="sft: missing required setting 'lr'"):
        validate_sft({"gen_length": 8, "max_steps": 2, "batch_size": 2})


def test_check_values_types():
    cfg = RLConfig(model="m", task="t", train="x", out="o", micro_batch=None, lr=1)  # an int is a valid float
    check_values(cfg)
    with pytest.raises(ValueError, match="micro_batch is out of range"):
        check_values(dataclasses.replace(cfg, micro_batch=0))
    with pytest.raises(ValueError, match="restrict_to_content must be a bool"):
        check_values(dataclasses.replace(cfg, restrict_to_content="yes"))
    grad = GradcheckConfig(out="g.csv")
    assert grad.lams == [0.0, 0.5, 1.0, 2.0] and grad.lams is not GradcheckConfig(out="h").lams  # fresh list
    with pytest.raises(ValueError, match=r"lams item is out of range \[0, inf\): -1"):
        check_values(dataclasses.replace(grad, lams=[0.5, -1]))
    with pytest.raises(ValueError, match="k must be a non-empty list"):
        check_values(dataclasses.replace(grad, k=[]))
