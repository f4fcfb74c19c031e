"""environment.yml (conda users) lists exactly pyproject.toml's dependencies plus its `test` extra."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
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


def _environment() -> tuple[dict, list]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml needs exactly one pip section"
    return _normalised(pips[0]), conda


def test_pip_section_mirrors_pyproject():
    pip, _ = _environment()
    project = _pyproject()
    assert set(pip) == set(project), (f"only in environment.yml: {sorted(set(pip) - set(project))}; "
                                      f"only in pyproject.toml: {sorted(set(project) - set(pip))}")
    differing = {name: (pip[name], project[name]) for name in pip if pip[name] != project[name]}
    assert not differing, f"version specifiers differ (environment.yml, pyproject.toml): {differing}"


def test_conda_python_satisfies_requires_python():
    _, conda = _environment()
    pythons = [d for d in conda if d.split("=")[0].strip() == "python"]
    assert pythons == ["python=3.11"], pythons
    with open(REPO / "pyproject.toml", "rb") as fh:
        requires = tomllib.load(fh)["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet
    assert "3.11" in SpecifierSet(requires)
    assert "pip" in conda


def test_normalisation_detects_a_changed_specifier():
    # the comparison must see a difference in the version bound, not only in the name
    a = _normalised(["torch>=2.4,<=2.14.1"])
    b = _normalised(["torch>=2.4,<2.14.1"])
    c = _normalised(["Torch<=2.14.1, >=2.4"])
    assert a != b and a == c
