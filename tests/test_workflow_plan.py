"""egspo.workflow as plain Python: config typing and merging, schedules, the path layout, the experiment grid, the
generated evaluation rules, shell-command pieces and the cross-field checks, on hand-computed cases. (The DAG they
produce under Snakemake is tested in test_workflow.py.)"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import yaml

from egspo.rl.checkpointing import checkpoint_path
from egspo.workflow.checks import check_config
from egspo.workflow.config import ConfigError, coerce_cli_scalars, deep_merge, effective_config, typed_scalar
from egspo.workflow.paths import Layout
from egspo.workflow.plan import Plan
from egspo.workflow.rules import eval_outputs, eval_rules, inherited_set_resources
from egspo.workflow.schedule import check_block_schedule, eval_steps, saved_checkpoints, saved_steps
from egspo.workflow.shell import Launcher, accuracy_flags, check_processes, data_flags, flags, rl_args

REPO = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO / "config.yaml").read_text())


def plan(**overrides) -> Plan:
    """The tiny preset with top-level `overrides` (as `--config` gives them), a shared `rl` schedule of 60 / 20
    and no per-task settings unless overridden."""
    raw = copy.deepcopy(RAW)
    for preset in raw["presets"].values():
        preset.pop("task_settings", None)
    raw.update({"rl": {"max_steps": 60, "save_every": 20}})
    raw.update(overrides)
    return Plan.from_raw(raw)


def test_cli_scalars_are_typed_and_other_strings_kept():
    assert [typed_scalar(s) for s in ("3", "-2", "2e-4", "1.5", ".5", "true", "False", "null", "~", "egspo", "1e")] \
        == [3, -2, 2e-4, 1.5, 0.5, True, False, None, None, "egspo", "1e"]
    node = {"seeds": ["0", "1"], "rl": {"lr": "2e-4", "selection": "entropy"}}
    assert coerce_cli_scalars(node) is node and node == {"seeds": [0, 1], "rl": {"lr": 2e-4, "selection": "entropy"}}


def test_deep_merge_and_preset_selection():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged = deep_merge(base, {"a": {"y": [3]}, "c": 2})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2} and base["a"]["y"] == [1, 2]  # no mutation
    raw = {"preset": "p", "presets": {"p": {"rl": {"lr": 1, "k": 2}}}, "rl": {"lr": 3}}
    assert effective_config(raw) == {"rl": {"lr": 3, "k": 2}}
    with pytest.raises(ConfigError, match=r"config key 'preset': 'q' is not a block of 'presets' \(have: p\)"):
        effective_config({**raw, "preset": "q"})


def test_save_schedule_and_eval_steps():
    assert saved_steps(60, 20) == [20, 40, 60]
    assert saved_steps(50, 20) == [20, 40, 50]  # the final step is always saved
    assert saved_steps(10, 20) == [10]
    assert saved_steps(50, 20, last=2) == [40, 50]
    assert saved_checkpoints(60, 30) == ["step_30", "step_60"]
    assert eval_steps(24, 0.5) == 12 and eval_steps(64, 1) == 64
    with pytest.raises(ConfigError, match="non-integer step count 12.5 at eval.gen_lengths entry 25"):
        eval_steps(25, 0.5)
    check_block_schedule("w", 24, 12, 8)  # 3 blocks, 4 steps each
    with pytest.raises(ConfigError, match="w: gen_length 24 is not a multiple of block_length 7"):
        check_block_schedule("w", 24, 12, 7)
    with pytest.raises(ConfigError, match="w: steps 10 is not a multiple of the 3 blocks"):
        check_block_schedule("w", 24, 10, 8)


def test_layout_uses_the_rl_checkpoint_naming():
    paths = Layout.of("work/", "results")
    assert paths.checkpoint_dir("sudoku", "egspo", 1, 60) == str(checkpoint_path("work/rl/sudoku/egspo/seed1", 60))
    assert paths.checkpoint_dir("{task}", "{method}", "{seed}", "{last}") == \
        "work/rl/{task}/{method}/seed{seed}/checkpoints/step_{last}"
    assert paths.eval_stem("sudoku", "sft", 0, "sft", 24, "test") == "work/eval/sudoku/sft/seed0/sft/len24/test"
    assert paths.results_files("tables/main", ["csv", "md"]) == ["results/tables/main.csv", "results/tables/main.md"]


def test_grid_counts_and_settings_order():
    p = plan(tasks=["sudoku", "countdown"], seeds=[0, 1], compare=["sft", "egspo", "egspo_sa"],
             methods={"egspo": {"max_steps": 40, "save_every": 40}},
             task_settings={"countdown": {"rl": {"max_steps": 90, "save_every": 45, "lr": 7.0}}})
    assert p.checkpoints("egspo_sa", "sudoku") == ["step_20", "step_40", "step_60"]
    assert p.checkpoints("egspo_sa", "countdown") == ["step_45", "step_90"]
    assert p.checkpoints("egspo", "countdown") == ["step_40"]  # the method's own entry wins over the task's
    assert p.method_settings("egspo_sa", "countdown")["lr"] == 7.0
    assert p.checkpoints("sft", "sudoku") == ["sft"]
    lengths, splits = len(p.C["eval"]["gen_lengths"]), len(p.C["eval"]["splits"])
    # sft: one shared evaluation per task (sft.seed is set in the tiny preset); RL: per seed and checkpoint
    shared = p.C["sft"]["seed"] is not None
    expected = sum((1 if shared else 2) + 2 * (len(p.checkpoints("egspo", t)) + len(p.checkpoints("egspo_sa", t)))
                   for t in ("sudoku", "countdown")) * lengths * splits
    assert len(p.eval_metrics(["sft", "egspo", "egspo_sa"])) == expected
    assert p.rl_finals(["sft", "egspo"]) == [f"work/rl/{t}/egspo/seed{s}/checkpoints/step_40"
                                            for t in ("sudoku", "countdown") for s in (0, 1)]
    with pytest.raises(ConfigError, match="method 'nope' is not in config key 'methods'"):
        p.method_settings("nope", "sudoku")


def test_eval_rules_group_by_schedule_and_split_into_parts():
    p = plan(tasks=["sudoku", "countdown"], task_settings={"countdown": {"rl": {"max_steps": 90, "save_every": 45}}},
             methods={**RAW["presets"]["tiny"]["methods"], "egspo": {"algorithm": "egspo", "max_steps": 40,
                                                                     "save_every": 40}})
    rules = {r.name: r for r in eval_rules(p)}
    assert set(rules) == {"eval_start", "eval", "eval_egspo", "eval_variants", "eval_start_countdown",
                          "eval_countdown", "eval_egspo_countdown", "eval_variants_countdown"}
    assert rules["eval"].ckpts == ("step_20", "step_40", "step_60") and "egspo" not in rules["eval"].methods
    assert rules["eval_countdown"].tasks == ("countdown",) and rules["eval_countdown"].ckpts == ("step_45", "step_90")
    n_files = 2 * len(p.seeds) * 3 * len(p.C["eval"]["gen_lengths"]) * len(p.C["eval"]["splits"])
    assert len(eval_outputs(p, rules["eval"])) == n_files
    parts = {r.name: r for r in eval_rules(plan(tasks=["sudoku"], eval={"checkpoints_per_job": 2}))}
    assert parts["eval_part1"].ckpts == ("step_20", "step_40") and parts["eval_part1"].log_suffix == "_step_20-step_40"
    assert parts["eval_part2"].ckpts == ("step_60",) and parts["eval_part2"].log_suffix == "_step_60"
    # a test-only task gets its own split group
    code = {r.name for r in eval_rules(plan(preset="paper", tasks=["humaneval", "mbpp"],
                                              eval={"checkpoints_per_job": None}))}
    assert {"eval_start", "eval_start_test", "eval", "eval_test"} <= code


def test_variants_are_evaluated_at_their_final_checkpoint_and_lengths_only():
    """eval.variants: a method outside `compare` is evaluated at its last checkpoint at the variant lengths, in rule
    eval_variants (or its own rule on another schedule); ablation / sweep grids hold every method there."""
    p = plan(tasks=["sudoku"], compare=["sft", "egspo_sa"], eval={"variants": {"gen_lengths": [32], "last_checkpoints": 1}},
             methods={**RAW["presets"]["tiny"]["methods"], "egspo_sa_k1": {"algorithm": "egspo", "k": 1,
                                                                           "max_steps": 30, "save_every": 10}})
    assert p.is_variant("egspo_sa_uniform") and not p.is_variant("egspo_sa") and not p.is_variant("sft")
    assert p.checkpoints("egspo_sa", "sudoku") == ["step_20", "step_40", "step_60"]
    assert p.checkpoints("egspo_sa_uniform", "sudoku") == ["step_60"]
    assert p.checkpoints("egspo_sa_k1", "sudoku") == ["step_30"]
    assert p.eval_lengths("egspo_sa_uniform", "sudoku") == [32] and p.eval_lengths("egspo_sa", "sudoku") == [24, 32, 48]
    assert p.eval_metrics(["egspo_sa_uniform"], seeds=[0]) == [
        f"work/eval/sudoku/egspo_sa_uniform/seed0/step_60/len32/{split}.metrics.json"
        for split in ("validation", "test")]
    rules = {r.name: r for r in eval_rules(p)}
    assert "egspo_sa_uniform" in rules["eval_variants"].methods and "egspo_sa" in rules["eval"].methods
    assert rules["eval_variants"].ckpts == ("step_60",) and rules["eval_variants"].lengths == (32,)
    assert rules["eval_egspo_sa_k1"].ckpts == ("step_30",) and rules["eval_egspo_sa_k1"].lengths == (32,)
    assert len(eval_outputs(p, rules["eval_variants"])) == len(p.seeds) * 1 * 1 * 2 * 2  # every seed in one job
    assert not rules["eval_variants"].per_seed and rules["eval_start"].per_seed
    assert eval_outputs(p, rules["eval_start"])[0] == "work/eval/{task}/{method}/seed{seed}/sft/len24/validation.jsonl"
    assert eval_outputs(p, rules["eval_variants"])[-1] == (f"work/eval/{{task}}/{{method}}/seed{p.seeds[-1]}/step_60/"
                                                            f"len32/test.metrics.json")
    grid = shlex.split(accuracy_flags(p, ["sft", "egspo_sa", "egspo_sa_uniform"], ["sudoku"], evidence=True))
    assert grid[grid.index("--lengths") + 1:grid.index("--splits")] == ["32"]
    checkpoints = grid[grid.index("--checkpoints") + 1:grid.index("--shared-seed")]
    assert checkpoints == ["sudoku:sft=sft", "sudoku:egspo_sa=step_60", "sudoku:egspo_sa_uniform=step_60"]
    # the main grid is untouched
    main = shlex.split(accuracy_flags(p, ["sft", "egspo_sa"], ["sudoku"]))
    assert main[main.index("--lengths") + 1:main.index("--splits")] == ["24", "32", "48"]
    assert "sudoku:egspo_sa=step_20,step_40,step_60" in main
    with pytest.raises(ConfigError, match=r"'eval.variants.gen_lengths' \[40\] must be among 'eval.gen_lengths'"):
        check_config(plan(eval={"variants": {"gen_lengths": [40]}}))


def test_a_task_with_its_own_lengths_gets_its_own_rules_and_report_grid():
    """task_settings.<task>.eval.gen_lengths: that task's jobs, files and report grid use its lengths only (the
    tiny preset: Countdown at 32), every other task keeps eval.gen_lengths; variants stay at the variant lengths."""
    own = {"countdown": {"eval": {"gen_lengths": [32]}}}
    p = plan(tasks=["sudoku", "countdown"], seeds=[0], task_settings=own, compare=["sft", "egspo_sa"],
             eval={"variants": {"gen_lengths": [32], "last_checkpoints": 1}})
    assert p.task_lengths("countdown") == [32] and p.task_lengths("sudoku") == [24, 32, 48]
    assert p.eval_lengths("egspo_sa", "countdown") == [32] and p.eval_lengths("egspo_sa_uniform", "countdown") == [32]
    files = p.eval_metrics(["sft", "egspo_sa"])
    assert {f.split("/len")[1].split("/")[0] for f in files if "/countdown/" in f} == {"32"}
    assert {f.split("/len")[1].split("/")[0] for f in files if "/sudoku/" in f} == {"24", "32", "48"}
    rules = {r.name: r for r in eval_rules(p)}
    assert set(rules) == {"eval_start", "eval", "eval_variants", "eval_start_countdown", "eval_countdown",
                          "eval_variants_countdown"}
    assert rules["eval_countdown"].tasks == ("countdown",) and rules["eval_countdown"].lengths == (32,)
    assert rules["eval_start_countdown"].lengths == (32,) and rules["eval"].lengths == (24, 32, 48)
    assert rules["eval"].tasks == ("sudoku",)
    grid = shlex.split(accuracy_flags(p, ["sft", "egspo_sa"]))
    assert grid[grid.index("--lengths") + 1:grid.index("--splits")] == ["24", "32", "48"]
    assert grid[grid.index("--task-lengths") + 1:grid.index("--shared-seed")] == ["countdown=32"]
    evidence = shlex.split(accuracy_flags(p, ["sft", "egspo_sa", "egspo_sa_uniform"], evidence=True))
    assert "--task-lengths" not in evidence and evidence[evidence.index("--lengths") + 1] == "32"
    # the same lengths on every task: no own rules, no --task-lengths
    same = plan(tasks=["sudoku", "countdown"], task_settings={"countdown": {"eval": {"gen_lengths": [24, 32, 48]}}})
    assert "eval_countdown" not in {r.name for r in eval_rules(same)}
    assert "--task-lengths" not in accuracy_flags(same, ["sft", "egspo_sa"])
    # a variant length the task does not evaluate, a length the block schedule cannot run, humaneval's RL settings
    with pytest.raises(ConfigError, match=r"'eval.variants.gen_lengths' \[24\] must be among "
                                          r"'task_settings.countdown.eval.gen_lengths' \[32\]"):
        check_config(plan(tasks=["sudoku", "countdown"], task_settings=own, eval={"variants": {"gen_lengths": [24]}}))
    with pytest.raises(ConfigError, match="'task_settings.countdown.eval.gen_lengths' entry 20: gen_length 20 is not"):
        check_config(plan(task_settings={"countdown": {"eval": {"gen_lengths": [20]}}}))
    with pytest.raises(ConfigError, match="humaneval trains on kodcode's data .* under 'task_settings.kodcode'"):
        check_config(plan(preset="paper", tasks=["humaneval"], task_settings={"humaneval": {"rl": {"lr": 1.0}}}))


def test_profile_eval_resources_reach_every_generated_rule():
    rules = eval_rules(plan(tasks=["sudoku"], eval={"checkpoints_per_job": 2}))
    merged = inherited_set_resources({"eval": {"runtime": 9}, "eval_part2": {"runtime": 1}, "rl": {"gpu": 4}}, rules)
    assert merged == {"eval": {"runtime": 9}, "eval_part2": {"runtime": 1}, "rl": {"gpu": 4},
                      "eval_start": {"runtime": 9}, "eval_part1": {"runtime": 9}, "eval_variants": {"runtime": 9}}
    assert inherited_set_resources({"rl": {"gpu": 4}}, rules) == {"rl": {"gpu": 4}}


def test_shell_pieces():
    assert flags({"max_steps": 5, "quiet": True, "off": False, "none": None, "k": [1, 2], "s": "a b"}) == \
        "--max-steps 5 --quiet --k 1,2 --s 'a b'"
    launcher = Launcher("egspo", "/py", "acc.yaml")
    assert launcher.command("rl", 1, 1, "rl --x 1") == "egspo rl --x 1"
    two = launcher.command("rl", 2, 1, "rl --x 1")
    assert two.startswith("/py -m accelerate.commands.launch --config_file acc.yaml --num_processes 2 "
                          "--num_machines 1 --main_process_port") and two.endswith("-m egspo.cli rl --x 1")
    multi = launcher.command("rl", 4, 2, "rl")
    assert "srun --nodes=2" in multi and "--num_processes 8 --num_machines 2" in multi
    with pytest.raises(ConfigError, match="needs gpu >= 1 per node"):
        launcher.command("rl", 0, 2, "rl")
    check_processes("rl", 4, 1, 12)
    with pytest.raises(ConfigError, match="batch_size 12 .* not divisible by the 8 processes"):
        check_processes("rl", 4, 2, 12)
    p = plan(tasks=["sudoku"], seeds=[0], sft={"seed": 5})
    args = rl_args(p, "sudoku", "egspo_sa", 0)
    assert args.startswith("rl --model work/sft/sudoku/seed5 --task sudoku --train work/data/sudoku/train.jsonl "
                           "--out work/rl/sudoku/egspo_sa/seed0 --seed 0 --style tiny ")
    grid = accuracy_flags(p, ["sft", "egspo_sa"])
    assert "--checkpoints sudoku:sft=sft sudoku:egspo_sa=step_20,step_40,step_60" in grid
    assert grid.endswith("--shared-seed sudoku:sft=5")


def test_authors_test_draw_reaches_only_the_tasks_it_names():
    data = {"source": "hub", "seed": 0, "authors_test_draw": {"sudoku": 256}}
    assert data_flags(data, "sudoku") == "--source hub --seed 0 --authors-test-draw 256"
    assert data_flags(data, "gsm8k") == "--source hub --seed 0"
    paper = Plan.from_raw({**copy.deepcopy(RAW), "preset": "paper"})
    assert paper.C["data"]["authors_test_draw"] == {"sudoku": 256}
    with pytest.raises(ConfigError, match="'data.n_test' also chooses the test rows"):
        check_config(plan(data={"authors_test_draw": {"sudoku": 8}, "n_test": 16}))


def test_a_false_override_of_an_optional_boolean_reaches_egspo_rl():
    """`attend_to_pads` unset means 'the fidelity mode's value' (true under authors): a false override must be
    written out, where flags() leaves false out; a false setting whose default is false stays out."""
    from egspo.cli import ArgumentParser
    from egspo.rl import command

    p = plan(tasks=["sudoku"], seeds=[0], rl={"fidelity": "authors", "attend_to_pads": False,
                                              "gradient_checkpointing": False})
    args = rl_args(p, "sudoku", "egspo_sa", 0)
    assert "--attend-to-pads false" in args and "--gradient-checkpointing" not in args
    parser = ArgumentParser()
    command.configure(parser)
    parsed = parser.parse_args(shlex.split(args)[1:])
    assert parsed.attend_to_pads is False and parsed.fidelity == "authors"


@pytest.mark.parametrize("overrides, message", [
    ({"methods": {"egspo_sa_all": {"algorithm": "egspo", "selection": "all", "k": 4}}},
     "selection='all' needs k == steps, got k=4, steps=16"),
    ({"rl": {"max_steps": 60, "save_every": 20, "k": 40}}, "k=40 exceeds the number of denoising steps steps=16"),
    ({"rl": {"max_steps": 10, "save_every": 20}}, "save_every = 20 exceeds max_steps = 10"),
    ({"rl": {"max_steps": 60, "save_every": 20, "steps": 10}}, "steps=10 is not a multiple of the number of blocks"),
    ({"methods": {"x": {"k": 2}}}, "config key 'methods.x': missing 'algorithm'"),
    ({"compare": ["sft", "nope"]}, "config key 'compare' entry 'nope' is neither 'sft'"),
    ({"compare": ["egspo"]}, "config key 'compare' must contain 'sft'"),
    ({"trace": {"method": "nope"}}, "config key 'trace.method' = 'nope' is not a key of 'methods'"),
    ({"eval": {"gen_lengths": [20]}}, "config key 'eval.gen_lengths' entry 20: gen_length 20 is not a multiple"),
])
def test_cross_field_checks_name_the_key(overrides, message):
    check_config(plan())  # the preset itself passes
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_config(plan(**overrides))
