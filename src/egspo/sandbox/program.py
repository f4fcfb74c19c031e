"""What the sandbox runs (:class:`Program`), under which :class:`Limits`, and what comes back
(:class:`SandboxResult`)."""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("passed", "failed", "error", "timeout", "oom", "output_limit", "crashed", "sandbox_error")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_OUTPUT_BYTES = 1 << 20
DEFAULT_MAX_PROCS = 32
DEFAULT_MAX_FILE_MB = 16
DEFAULT_TMPFS_MB = 64


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program. ``passed`` iff the harness confirmed (nonce) that every test ran and passed and the
    process exited 0. ``tests_passed / tests_total`` is the fraction used as a reward (0 when nothing ran)."""

    passed: bool
    status: str
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    returncode: int | None = None
    tests_passed: int = 0
    tests_total: int = 0
    detail: str = ""

    @property
    def fraction_passed(self) -> float:
        return self.tests_passed / self.tests_total if self.tests_total else 0.0


@dataclass(frozen=True)
class Program:
    """What to run. ``code`` is the untrusted candidate. Without tests it runs as ``__main__`` and passes when it
    completes. ``tests``: trusted snippets (each one test) run after the candidate in a namespace holding its
    names; ``test_setup`` (trusted) runs in that namespace before each test; ``entry_points`` are candidate names
    the tests may use even where they shadow a builtin. ``test_module``: pytest source that imports the candidate
    as module ``solution``; each collected test item counts as one test."""

    code: str
    tests: tuple[str, ...] | None = None
    test_setup: str = ""
    entry_points: tuple[str, ...] = ()
    test_module: str | None = None

    def __post_init__(self):
        if not isinstance(self.code, str):
            raise ValueError(f"Program.code must be a str, got {type(self.code).__name__}")
        if self.tests is not None and self.test_module is not None:
            raise ValueError("Program: give either tests (assert snippets) or test_module (pytest), not both")
        if self.tests is not None:
            object.__setattr__(self, "tests", tuple(self.tests))
            if not self.tests:
                raise ValueError("Program.tests is empty: a program without tests would pass vacuously")

    @property
    def mode(self) -> str:
        return "pytest" if self.test_module is not None else "asserts" if self.tests is not None else "script"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_procs: int = DEFAULT_MAX_PROCS
    max_file_mb: int = DEFAULT_MAX_FILE_MB
    tmpfs_mb: int = DEFAULT_TMPFS_MB
    isolation: str = "auto"

    def __post_init__(self):
        for name in ("timeout_s", "memory_mb", "max_output_bytes", "max_procs", "max_file_mb", "tmpfs_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"sandbox limit {name} must be a positive number, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"sandbox limit memory_mb must be >= 64 (the interpreter needs it), got {self.memory_mb}")
        if self.isolation not in ("auto", "namespace", "basic"):
            raise ValueError(f"isolation must be 'auto', 'namespace' or 'basic', got {self.isolation!r}")


def imported_modules(source: str) -> list[str]:
    """Top-level module names imported anywhere in ``source`` (for pre-importing before the candidate)."""
    import ast
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def preload_modules(program: Program) -> list[str]:
    """Modules the trusted test code imports: the harness imports them before the candidate runs."""
    trusted = "\n".join([program.test_setup, *(program.tests or ()), program.test_module or ""])
    return list(dict.fromkeys(imported_modules(trusted)))

