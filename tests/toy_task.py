"""A toy task over the tiny character alphabet, for the trainer tests (register it as ``"toy_task:TOY"``)."""

from __future__ import annotations

from egspo.tasks.base import Task


class ToyTask(Task):
    """Prompt ``row["prompt"]``; reward = (completion length + number of 'a's) / 10, so rewards vary across a group
    even for an untrained model."""

    name = "toy"

    def load(self, split, source="tiny", **kwargs):
        raise NotImplementedError

    def prompt(self, row, style="tiny", tokenizer=None):
        return row["prompt"]

    def reward(self, completion, row):
        return (len(completion) + completion.count("a")) / 10.0

    def grade(self, completion, row):
        return {"correct": completion == row.get("target"), "reward": self.reward(completion, row)}


TOY = ToyTask()
