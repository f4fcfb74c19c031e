import itertools
import random

import pytest

from egspo.tasks import get_task
from egspo.tasks import sudoku
from egspo.tasks.answers import TINY_ALPHABET, SYSTEM_PROMPT

TASK = get_task("sudoku")
ROW = {"Puzzle": "3102200002100320", "Solution": "3142243142131324"}  # 8 empty cells


def _valid(grid: str) -> bool:
    rows = [grid[4 * r : 4 * r + 4] for r in range(4)]
    cols = ["".join(row[c] for row in rows) for c in range(4)]
    boxes = ["".join(grid[4 * (2 * br + dr) + 2 * bc + dc] for dr in (0, 1) for dc in (0, 1))
             for br in (0, 1) for bc in (0, 1)]
    return all(sorted(u) == list("1234") for u in rows + cols + boxes)


def test_all_288_grids_match_an_independent_enumeration():
    perms = ["".join(p) for p in itertools.permutations("1234")]
    # rows are permutations of 1234; extend row by row while columns stay distinct, then check boxes
    partial = [""]
    for _ in range(4):
        partial = [g + p for g in partial for p in perms
                   if all(p[c] not in g[c::4] for c in range(4))]
    brute = {g for g in partial if _valid(g)}
    assert len(brute) == 288
    assert set(sudoku.all_grids()) == brute and len(sudoku.all_grids()) == 288


def test_backtracking_solver_agrees_with_grid_counting():
    rng = random.Random(0)
    grids = sudoku.all_grids()
    for _ in range(120):
        grid = rng.choice(grids)
        keep = set(rng.sample(range(16), rng.randint(0, 10)))
        puzzle = "".join(grid[i] if i in keep else "0" for i in range(16))
        solutions = sudoku.solve(puzzle, limit=None)
        assert len(solutions) == sudoku.count_completions(puzzle)
        assert grid in solutions and all(_valid(s) for s in solutions)
    assert sudoku.solve("1100" + "0" * 12, limit=None) == []  # conflicting givens


def test_tiny_generator_unique_disjoint_by_grid_and_deterministic():
    data = sudoku.generate_tiny(seed=3, n_train=300, n_validation=40, n_test=60, min_empty=6, max_empty=10)
    assert {s: len(r) for s, r in data.items()} == {"train": 300, "validation": 40, "test": 60}
    grids = {s: {r["Solution"] for r in rows} for s, rows in data.items()}
    assert not (grids["train"] & grids["validation"]) and not (grids["train"] & grids["test"])
    assert not (grids["validation"] & grids["test"])
    for rows in data.values():
        assert len({r["Puzzle"] for r in rows}) == len(rows)
        for r in rows:
            assert sudoku.solve(r["Puzzle"], limit=None) == [r["Solution"]]  # unique solution, proved
            assert 6 <= r["Puzzle"].count("0") <= 10
    assert sudoku.generate_tiny(seed=3, n_train=300, n_validation=40, n_test=60) == data
    assert sudoku.generate_tiny(seed=4, n_train=300, n_validation=40, n_test=60) != data
    with pytest.raises(ValueError, match="n_test"):
        sudoku.generate_tiny(n_test=-1)


@pytest.mark.parametrize(
    "completion, cell_accuracy, correct",
    [
        ("<reasoning>\nx\n</reasoning>\n<answer>\n3142243142131324\n</answer>\n", 1.0, True),
        ("<answer>3 1 4 2 | 2 4 3 1\n4,2,1,3 [1,3,2,4]</answer>", 1.0, True),  # separators are ignored
        ("<answer>３１４２２４３１４２１３１３２４</answer>", 1.0, True),  # fullwidth digits
        ("<answer>3122243142131324</answer>", 7 / 8, False),  # one empty cell wrong (index 2)
        ("<answer>3112243142131321</answer>", 6 / 8, False),  # two empty cells wrong (2, 15)
        ("<answer>4142243142131324</answer>", 0.0, False),  # a given cell changed: invalid
        ("<answer>31422431421313241</answer>", 0.0, False),  # 17 digits
        ("<answer>3142243142</answer>", 0.0, False),  # 10 digits
        ("<answer>0000000000000000</answer>", 0.0, False),
        ("<answer>3142243142131324</answer>\n<answer>3122243142131324</answer>", 7 / 8, False),  # last block
        # row labels are not cells
        ("<answer>R1:3142 R2:2431 R3:4213 R4:1324</answer>", 1.0, True),
        ("<answer>\nRow 1: 3 1 4 2\nRow 2: 2 4 3 1\nRow 3: 4 2 1 3\nRow 4: 1 3 2 4\n</answer>", 1.0, True),
        ("<answer>row #1 - 3142, row #2 - 2431, row #3 - 4213, row #4 - 1324</answer>", 1.0, True),
        ("<answer>R1:3122 R2:2431 R3:4213 R4:1324</answer>", 7 / 8, False),
        ("3142243142131324", 0.0, False),  # no answer block
        ("<answer>\n3142243142131324\n", 0.0, False),  # unclosed
        ("", 0.0, False),
    ],
)
def test_sudoku_scoring(completion, cell_accuracy, correct):
    result = TASK.grade(completion, ROW)
    assert result["cell_accuracy"] == pytest.approx(cell_accuracy)
    assert result["correct"] is correct
    assert TASK.reward(completion, ROW) == pytest.approx(cell_accuracy)


def _two_solution_puzzle() -> tuple[str, str, str]:
    """(puzzle, stored solution, the other solution) of a puzzle with exactly two completions, found by blanking
    cells of the first grid in a fixed order."""
    grid = sudoku.all_grids()[0]
    rng = random.Random(0)
    for _ in range(1000):
        cells = rng.sample(range(16), 8)
        puzzle = "".join("0" if i in cells else grid[i] for i in range(16))
        if sudoku.count_completions(puzzle) == 2:
            other = next(s for s in sudoku.solve(puzzle, limit=None) if s != grid)
            return puzzle, grid, other
    raise AssertionError("no two-solution puzzle found")


def test_any_valid_completion_that_keeps_the_givens_is_solved():
    puzzle, stored, other = _two_solution_puzzle()
    row = {"Puzzle": puzzle, "Solution": stored}
    assert _valid(other) and other != stored and all(p in ("0", o) for p, o in zip(puzzle, other))
    for grid in (stored, other):
        result = TASK.grade(f"<answer>{grid}</answer>", row)
        assert result["correct"] and result["cell_accuracy"] == 1.0
    # a complete grid keeping the givens but breaking the columns (two empty cells of a row swapped) is not solved
    i, j = next((i, j) for i in range(16) for j in range(i + 1, 16)
                if i // 4 == j // 4 and puzzle[i] == puzzle[j] == "0" and other[i] != other[j])
    broken = list(other)
    broken[i], broken[j] = other[j], other[i]
    result = TASK.grade(f"<answer>{''.join(broken)}</answer>", row)
    assert not result["correct"] and result["cell_accuracy"] < 1.0
    # authors-compat mode keeps comparing with the stored solution
    from egspo.tasks.authors_compat import compat_grade

    assert compat_grade("sudoku", f"<answer>{stored}</answer>", row)["correct"]
    assert not compat_grade("sudoku", f"<answer>{other}</answer>", row)["correct"]


def test_124_of_the_500_test_puzzles_have_two_to_four_solutions(shared_data):
    rows = TASK.load("test", str(shared_data / "sudoku_4x4_test.csv"))
    counts = [sudoku.count_completions(r["Puzzle"]) for r in rows]
    assert len(rows) == 500 and sum(c > 1 for c in counts) == 124 and max(counts) == 4 and min(counts) == 1
    # the two solvers agree, and every completion of every puzzle grades as solved in our mode
    for row, count in zip(rows, counts):
        solutions = sudoku.solve(row["Puzzle"], limit=None)
        assert len(solutions) == count and row["Solution"] in solutions
        assert all(TASK.grade(f"<answer>{s}</answer>", row)["correct"] for s in solutions)


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
def test_sudoku_never_raises_or_hangs_on_adversarial_text():
    for text in ["<answer>" * 100_000, "</answer>" * 100_000, "1" * 1_000_000, "<answer>" + "9" * 10_000 + "</answer>",
                 "\x00\ud800", "<answer>¹²³⁴" * 1000]:
        assert TASK.reward(text, ROW) == 0.0


def test_prompts_and_targets():
    tiny = TASK.prompt(ROW, "tiny")
    assert tiny == "sudoku:31.22....21..32."
    assert set(tiny) <= set(TINY_ALPHABET)
    target = TASK.target(ROW)
    assert target == "<answer>3142243142131324</answer>"
    assert TASK.grade(target, ROW)["correct"] and TASK.grade(TASK.target(ROW, "d1"), ROW)["correct"]
    d1 = TASK.prompt(ROW, "d1")
    assert d1.startswith(SYSTEM_PROMPT) and ROW["Puzzle"] in d1 and "<answer>" in d1

    class FakeTokenizer:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            assert add_generation_prompt is True and tokenize is False
            return "<user>" + messages[0]["content"] + "<assistant>"

    assert TASK.prompt(ROW, "d1", FakeTokenizer()) == "<user>" + d1 + "<assistant>"
    with pytest.raises(ValueError, match="style"):
        TASK.prompt(ROW, "other")


def test_real_d1_test_file_loads_and_every_solution_grades_one(shared_data):
    rows = TASK.load("test", str(shared_data / "sudoku_4x4_test.csv"))
    assert len(rows) == 500
    assert rows[1]["Puzzle"] == "0140432014020000"  # leading zeros kept (CSV read as text)
    for row in rows:
        assert _valid(row["Solution"])
        result = TASK.grade(f"<answer>{row['Solution']}</answer>", row)
        assert result["correct"] and result["cell_accuracy"] == 1.0


def test_hub_loader_fetches_pins_caches_and_removes_leaked_solutions(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EGSPO_CACHE", str(tmp_path / "cache"))
    test_rows = sudoku.read_table(shared_data / "sudoku_4x4_test.csv")
    train_file = tmp_path / "train.csv"
    leaked = test_rows[0]
    fresh = [g for g in sudoku.all_grids() if g not in {r["Solution"] for r in test_rows}][:30]
    lines = ["Puzzle,Solution", f"{leaked['Puzzle']},{leaked['Solution']}"]
    lines += [f"{'0' + g[1:]},{g}" for g in fresh]
    train_file.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(sudoku, "TEST_URL", (shared_data / "sudoku_4x4_test.csv").resolve().as_uri())
    monkeypatch.setattr(sudoku, "TRAIN_URL", train_file.as_uri())
    assert TASK.load("test", "hub") == TASK.load("test", str(shared_data / "sudoku_4x4_test.csv"))
    assert (tmp_path / "cache" / "sudoku" / "4x4_test_sudoku.csv").is_file()
    train = TASK.load("train", "hub", n_validation=5, seed=1)
    validation = TASK.load("validation", "hub", n_validation=5, seed=1)
    assert len(train) == 25 and len(validation) == 5
    assert leaked["Solution"] not in {r["Solution"] for r in train + validation}
    assert not {r["Puzzle"] for r in train} & {r["Puzzle"] for r in validation}


def test_hub_loader_offline_error_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("EGSPO_CACHE", str(tmp_path))
    monkeypatch.setattr(sudoku, "TEST_URL", "http://127.0.0.1:9/4x4_test_sudoku.csv")
    with pytest.raises(RuntimeError, match="could not download http://127.0.0.1:9.*local copy"):
        TASK.load("test", "hub")


def test_pinned_hash_rejects_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EGSPO_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "fake.csv"
    fake.write_text("Puzzle,Solution\n3102200002100320,3142243142131324\n")
    monkeypatch.setattr(sudoku, "TEST_URL", fake.as_uri())
    with pytest.raises(RuntimeError, match="sha256"):
        TASK.load("test", "hub")


def test_malformed_rows_are_rejected(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Puzzle,Solution\n31022000021003,3142243142131324\n")
    with pytest.raises(ValueError, match="Puzzle"):
        TASK.load("test", str(bad))
    with pytest.raises(ValueError, match="split"):
        TASK.load("dev", "tiny")
