"""The one path layout of a run: everything a job writes lies under the work directory W, every table and figure
under the results directory R.

    W/data/<task>/<split>.jsonl                         W/models/init            (the built tiny model)
    W/sft/<run>/seed<s>                                 W/rl/<train task>/<method>/seed<s>/checkpoints/step_<N>
    W/eval/<task>/<method>/seed<s>/<ckpt>/len<L>/<split>.{jsonl,metrics.json}
    W/trace/<task>.json     W/gradcheck/gradcheck.csv   W/logs/...               R/tables/*  R/figures/*
"""

from __future__ import annotations

from dataclasses import dataclass

from egspo.rl.run_layout import checkpoint_path


@dataclass(frozen=True)
class Layout:
    work: str
    results: str

    @classmethod
    def of(cls, work_dir: str, results_dir: str) -> "Layout":
        return cls(work_dir.rstrip("/"), results_dir.rstrip("/"))

    @property
    def logs(self) -> str:
        return f"{self.work}/logs"

    @property
    def init_model(self) -> str:
        return f"{self.work}/models/init"

    @property
    def gradcheck_csv(self) -> str:
        return f"{self.work}/gradcheck/gradcheck.csv"

    @property
    def eval_root(self) -> str:
        return f"{self.work}/eval"

    @property
    def rl_root(self) -> str:
        return f"{self.work}/rl"

    def data_path(self, task: str, split: str) -> str:
        return f"{self.work}/data/{task}/{split}.jsonl"

    def data_dir(self, task: str) -> str:
        return f"{self.work}/data/{task}"

    def sft_dir(self, run: str, seed: int | str) -> str:
        """SFT run `run` (a train task, or `s1k` for the one warm start on `sft.data`) with seed `seed`."""
        return f"{self.work}/sft/{run}/seed{seed}"

    def rl_dir(self, train_task: str, method: str, seed: int | str) -> str:
        return f"{self.rl_root}/{train_task}/{method}/seed{seed}"

    def checkpoint_dir(self, train_task: str, method: str, seed: int | str, step: int | str) -> str:
        """`step` an int, or a wildcard pattern such as '{last}' kept as text."""
        if isinstance(step, str) and not step.isdigit():
            return f"{self.rl_dir(train_task, method, seed)}/checkpoints/step_{step}"
        return str(checkpoint_path(self.rl_dir(train_task, method, seed), int(step)))

    def eval_method_dir(self, task: str, method: str) -> str:
        return f"{self.eval_root}/{task}/{method}"

    @staticmethod
    def seed_dir(seed: int | str) -> str:
        """The folder of one seed's run under a method's folder (`seed<s>`)."""
        return f"seed{seed}"

    def eval_dir(self, task: str, method: str, seed: int | str) -> str:
        return f"{self.eval_method_dir(task, method)}/{self.seed_dir(seed)}"

    def eval_stem(self, task: str, method: str, seed: int | str, ckpt: str, length: int | str, split: str) -> str:
        """Generations are `<stem>.jsonl`, their metrics `<stem>.metrics.json`."""
        return f"{self.eval_dir(task, method, seed)}/{ckpt}/len{length}/{split}"

    def trace_path(self, task: str) -> str:
        return f"{self.work}/trace/{task}.json"

    def log(self, name: str) -> str:
        return f"{self.logs}/{name}.log"

    def result_stem(self, stem: str) -> str:
        return f"{self.results}/{stem}"

    def results_files(self, stem: str, exts: list[str] | tuple[str, ...]) -> list[str]:
        return [f"{self.results}/{stem}.{ext}" for ext in exts]
