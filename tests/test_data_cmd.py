import json

import pytest

from egspo.cli import main


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_sudoku_and_countdown_files(tmp_path, capsys):
    for task in ("sudoku", "countdown"):
        out = tmp_path / task
        assert main(["data", "--task", task, "--source", "tiny", "--out-dir", str(out), "--seed", "7",
                     "--n-train", "60", "--n-validation", "10", "--n-test", "20"]) == 0
        splits = {s: _read(out / f"{s}.jsonl") for s in ("train", "validation", "test")}
        assert {s: len(r) for s, r in splits.items()} == {"train": 60, "validation": 10, "test": 20}
        assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
        again = tmp_path / f"{task}_again"
        assert main(["data", "--task", task, "--source", "tiny", "--out-dir", str(again), "--seed", "7",
                     "--n-train", "60", "--n-validation", "10", "--n-test", "20"]) == 0
        assert (again / "test.jsonl").read_text() == (out / "test.jsonl").read_text()
    assert "data: task=countdown source=tiny seed=7 train=60 validation=10 test=20" in capsys.readouterr().out
    sudoku_train = {r["Solution"] for r in _read(tmp_path / "sudoku" / "train.jsonl")}
    assert sudoku_train.isdisjoint(r["Solution"] for r in _read(tmp_path / "sudoku" / "test.jsonl"))


def test_local_file_source_is_one_split(shared_data, tmp_path):
    src = shared_data / "countdown_cd3_test.jsonl"
    assert main(["data", "--task", "countdown", "--source", str(src), "--out-dir", str(tmp_path),
                 "--splits", "test", "--n-test", "5"]) == 0
    rows = _read(tmp_path / "test.jsonl")
    assert len(rows) == 5 and rows[0]["numbers"] == [30, 100, 93] and rows[0]["target"] == 23
    assert main(["data", "--task", "countdown", "--source", str(src), "--out-dir", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "gsm8k", "--source", "tiny"], "no tiny-preset generator"),
        (["--task", "sudoku", "--source", "nowhere.csv"], "'tiny', 'hub' or an existing file"),
        (["--task", "sudoku", "--source", "tiny", "--n-train", "-1"], "--n-train must be >= 0"),
        (["--task", "sudoku", "--source", "tiny", "--splits", "dev"], "unknown split 'dev'"),
    ],
)
def test_errors_name_the_parameter(tmp_path, capsys, argv, message):
    assert main(["data", *argv, "--out-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_read_table_takes_a_json_list_or_json_lines(tmp_path):
    from egspo.tasks.sources import read_table

    listed = tmp_path / "listed.json"
    listed.write_text('\n  [{"a": 1}, {"a": 2}]\n', encoding="utf-8")
    lines = tmp_path / "lines.jsonl"
    lines.write_text('\n{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert read_table(listed) == read_table(lines) == [{"a": 1}, {"a": 2}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2: invalid JSON"):
        read_table(bad)
    scalars = tmp_path / "scalars.json"
    scalars.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="every row must be a JSON object"):
        read_table(scalars)


def test_authors_test_draw_is_their_seeded_numpy_choice(shared_data, tmp_path):
    """--authors-test-draw 256 keeps the Sudoku rows the authors' evaluation scores: the literal form of their code
    (global numpy seeded 42, then numpy.random.choice without replacement), in the drawn order."""
    import numpy as np

    from egspo.tasks.prepare import authors_test_draw

    np.random.seed(42)
    theirs = np.random.choice(500, 256, replace=False).tolist()
    assert theirs[:10] == [361, 73, 374, 155, 104, 394, 377, 124, 68, 450]
    assert authors_test_draw([{"i": i} for i in range(500)], 256) == [{"i": i} for i in theirs]

    src = shared_data / "sudoku_4x4_test.csv"
    assert main(["data", "--task", "sudoku", "--source", str(src), "--out-dir", str(tmp_path), "--splits", "test",
                 "--authors-test-draw", "256"]) == 0
    rows = _read(tmp_path / "test.jsonl")
    lines = src.read_text().splitlines()[1:]
    assert len(rows) == 256 and [r["Puzzle"] for r in rows[:3]] == [lines[i].split(",")[0] for i in theirs[:3]]
    assert main(["data", "--task", "sudoku", "--source", str(src), "--out-dir", str(tmp_path / "x"), "--splits",
                 "test", "--authors-test-draw", "256", "--n-test", "5"]) == 2
    assert main(["data", "--task", "sudoku", "--source", str(src), "--out-dir", str(tmp_path / "y"), "--splits",
                 "test", "--authors-test-draw", "501"]) == 2
