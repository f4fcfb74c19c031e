"""Pinned versions: requirements.lock (what `make setup` installs) holds one exact version per package;
environment.yml (conda users) pins exactly pyproject.toml's dependencies plus its `test` extra at the lock's
versions, which satisfy pyproject's ranges (those stay for users who install egspo into their own environment)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _normalised(requirements: list[str]) -> dict[str, tuple[str, frozenset[str], str]]:
    """name -> (specifier set, extras, marker), with names canonicalised and specifiers order-independent."""
    out = {}
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} listed twice"
        out[name] = (",".join(sorted(str(s) for s in req.specifier)), frozenset(req.extras), str(req.marker or ""))
    return out


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    return _normalised(project["dependencies"] + project["optional-dependencies"]["test"])


def _pip_lines() -> tuple[list[str], list[str]]:
    """environment.yml's pip section: (requirement lines, option lines such as `-c requirements.lock`)."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml needs exactly one pip section"
    return [p for p in pips[0] if not p.startswith("-")], [p for p in pips[0] if p.startswith("-")]


def _environment() -> tuple[dict, list]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    return _normalised(_pip_lines()[0]), conda


def lock_versions(text: str) -> dict[str, str]:
    """requirements.lock's `name==version` lines (comments skipped) as canonical name -> version."""
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "+" in specs[0].version or "*" in specs[0].version:
            raise ValueError(f"requirements.lock line {number}: {line!r} is not one exact `name==version`")
        name = canonicalize_name(req.name)
        if name in out:
            raise ValueError(f"requirements.lock line {number}: {name} pinned twice")
        out[name] = specs[0].version
    return out


LOCK = lock_versions((REPO / "requirements.lock").read_text())


def test_pip_section_pins_pyproject_dependencies_at_the_lock_versions():
    pip, _ = _environment()
    project = _pyproject()
    assert set(pip) == set(project), (f"only in environment.yml: {sorted(set(pip) - set(project))}; "
                                      f"only in pyproject.toml: {sorted(set(project) - set(pip))}")
    pins = {name: spec for name, (spec, _, _) in pip.items()}
    differing = {name: (pins[name], LOCK.get(name)) for name in pins if pins[name] != f"=={LOCK.get(name)}"}
    assert not differing, f"environment.yml pins differ from requirements.lock (environment.yml, lock): {differing}"
    outside = {name: (LOCK[name], project[name][0]) for name in project
               if LOCK[name] not in SpecifierSet(project[name][0])}
    assert not outside, f"lock versions outside pyproject.toml's ranges (lock, range): {outside}"


def test_environment_and_makefile_install_with_the_lock():
    _, options = _pip_lines()
    assert "-c requirements.lock" in options, options
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q -c requirements.lock -e '.[test]'" in makefile


def test_lock_reader_rejects_ranges_local_tags_and_duplicates():
    assert lock_versions("# comment\nTorch==2.13.0\nPyYAML==6.0.4\n") == {"torch": "2.13.0", "pyyaml": "6.0.4"}
    for bad, what in (("numpy>=2", "not one exact"), ("torch==2.13.0+cpu", "not one exact"),
                      ("numpy==2.4.6\nNumPy==2.4.6", "pinned twice")):
        with pytest.raises(ValueError, match=what):
            lock_versions(bad)


def _closure(root: str, extras: set[str]) -> set[str]:
    """Canonical names of the installed distributions ``root[extras]`` needs on this machine (markers evaluated)."""
    seen, todo = set(), [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            dep = canonicalize_name(req.name)
            if dep not in seen:
                seen.add(dep)
                todo.append((dep, frozenset(req.extras)))
    return seen


def test_lock_covers_every_package_egspo_needs():
    try:
        metadata.distribution("egspo")
    except metadata.PackageNotFoundError:
        pytest.skip("egspo is not installed in this environment (needed to read its dependency tree)")
    needed = _closure("egspo", {"test"})
    missing = sorted(needed - set(LOCK))
    assert not missing, f"requirements.lock does not pin {missing}: regenerate it with `make lock`"


def test_conda_python_satisfies_requires_python():
    _, conda = _environment()
    pythons = [d for d in conda if d.split("=")[0].strip() == "python"]
    assert pythons == ["python=3.11"], pythons
    with open(REPO / "pyproject.toml", "rb") as fh:
        requires = tomllib.load(fh)["project"]["requires-python"]
    assert "3.11" in SpecifierSet(requires)
    assert "pip" in conda


def test_normalisation_detects_a_changed_specifier():
    # the comparison must see a difference in the version bound, not only in the name
    a = _normalised(["torch>=2.4,<=2.14.1"])
    b = _normalised(["torch>=2.4,<2.14.1"])
    c = _normalised(["Torch<=2.14.1, >=2.4"])
    assert a != b and a == c
