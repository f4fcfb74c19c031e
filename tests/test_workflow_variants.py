"""egspo.workflow.variants: a --config override that changes what is computed gets directories of its own (derived
from the override, stable across reruns); grid selections share the work directory; named directories are kept."""

from __future__ import annotations

import hashlib
import json

from egspo.workflow.variants import placement, variant_name

PRESET = {"work_dir": "work", "results_dir": "results/", "methods": {"egspo": {"algorithm": "egspo"}}}


def test_no_override_is_the_default_run():
    assert placement({}, PRESET) == placement({"preset": "tiny"}, PRESET)
    p = placement({}, PRESET)
    assert (p.work_dir, p.results_dir, p.note) == ("work", "results", "")


def test_variant_name_is_the_keys_and_a_hash_of_the_override():
    override = {"rl": {"lr": 2e-4}, "seeds": [0]}
    digest = hashlib.sha256(json.dumps(override, sort_keys=True).encode()).hexdigest()[:8]
    assert variant_name(override) == f"rl-seeds-{digest}"
    assert variant_name({"seeds": [0], "rl": {"lr": 2e-4}}) == variant_name(override)  # key order does not matter
    assert variant_name({"rl": {"lr": 3e-4}, "seeds": [0]}) != variant_name(override)


def test_a_changed_computation_gets_its_own_work_and_results():
    p = placement({"rl": {"lr": 2e-4}}, PRESET)
    name = variant_name({"rl": {"lr": 2e-4}})
    assert (p.work_dir, p.results_dir) == (f"work/variants/{name}", f"results/variants/{name}")
    assert "work in work/variants/" in p.note and "set work_dir= / results_dir=" in p.note
    # changing an existing method's entry changes its runs too
    p = placement({"methods": {"egspo": {"k": 2}}}, PRESET)
    assert p.work_dir.startswith("work/variants/methods-")


def test_a_grid_selection_or_a_new_method_shares_the_work_directory():
    for override in ({"tasks": ["sudoku"], "seeds": [0]}, {"compare": ["sft", "egspo"]},
                     {"methods": {"egspo_k2": {"algorithm": "egspo", "k": 2}}, "compare": ["sft", "egspo_k2"]}):
        p = placement(override, PRESET)
        assert p.work_dir == "work" and p.results_dir == f"results/variants/{variant_name(override)}", override


def test_named_directories_are_used_as_given():
    p = placement({"rl": {"lr": 2e-4}, "results_dir": "results/variants/lr", "work_dir": "work/lr"}, PRESET)
    assert (p.work_dir, p.results_dir) == ("work/lr", "results/variants/lr")
    p = placement({"tasks": ["sudoku"], "results_dir": "results/sudoku"}, PRESET)
    assert (p.work_dir, p.results_dir) == ("work", "results/sudoku")
