"""Evaluation: greedy generation over a grid, grading of completions, trajectory traces for Figure 2."""
