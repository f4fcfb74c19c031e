"""4x4 Sudoku grader of egspo as a Hugging Face `evaluate` metric (metric card: README.md beside this file).

    evaluate.load("<path to this directory>").compute(predictions=completions, references=json_rows)
"""

import egspo.evaluation.metric as egspo_metric


class EgspoSudoku(egspo_metric.TaskMetric):
    TASK = "sudoku"
