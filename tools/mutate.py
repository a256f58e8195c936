"""Mutation testing for rnnlab: plant known bugs, one at a time, and check the tests catch them.

Each mutation in the list (TOML, default ``tools/mutations.toml``) names a file,
an exact snippet of it (``find``, which must occur exactly once), the snippet's
buggy replacement (``replace``), the pytest arguments that should fail because
of it (``tests``) and a line on the bug it stands for (``why``)::

    [[mutation]]
    name = "adam-no-bias-correction"
    file = "src/rnnlab/optim.py"
    find = "step_size = self.lr / (1 - b1**self.steps)"
    replace = "step_size = self.lr"
    tests = ["tests/test_optim.py::test_adam_first_step_is_lr_times_sign"]
    why = "Adam without the first moment's bias correction"

For each mutation the tool copies src/, tests/ and the pytest configuration
(never .venv or .git) into a fresh temporary directory, applies the
replacement there and runs ``python -m pytest -x -q -p no:cacheprovider
-m "not peer" <tests>`` in it with PYTHONPATH=<tmp>/src, which comes before
the editable install on sys.path. The real tree is never written.

pytest's exit code decides: 1 (a test failed), 2 or 3 (errors) = killed;
0 = SURVIVED; 5 (no tests collected), 4 (bad arguments) or anything else =
an error in the list, as is a ``find`` that no longer occurs exactly once.
A run past the timeout is killed too, shown as "timeout". The table gives
each mutation's result, seconds and first failing test (for a survivor,
pytest's last line: "4 skipped" says the tests did not run). The exit
status is 1 when any mutation survived or errored, else 0.

Usage (with the project's virtual environment; any working directory)::

    python tools/mutate.py                    # every mutation, one at a time
    python tools/mutate.py -j 2               # two at once
    python tools/mutate.py --only NAME ...    # just these
    python tools/mutate.py --check            # only check the list against the code (no pytest)
    python tools/mutate.py --baseline         # first check the listed tests pass unmutated
    python tools/mutate.py -v                 # and print each run's pytest output
    python tools/mutate.py --list other.toml --timeout 120 --root path/to/repo

RNNLAB_DATA_DIR passes through to the tests; when it is unset and the
repository's ../shared/data exists, the tool sets it to that folder (the
default of tests/conftest.py, which a copy elsewhere would not find).
TMPDIR points into the copy. The copy is of the working tree as it is,
uncommitted edits included. POSIX only (process groups).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIST = ROOT / "tools" / "mutations.toml"
DEFAULT_TIMEOUT = 600.0
# What a mutant tree holds: the only paths copied from the repository (when they exist).
COPIED = ("src", "tests", "pyproject.toml", "conftest.py", "pytest.ini", "setup.cfg", "tox.ini")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".hypothesis")
FIELDS = ("name", "file", "find", "replace", "tests", "why")
KILLED_CODES = (1, 2, 3)


class ListError(Exception):
    """The mutation list cannot be read; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Mutation:
    name: str
    file: str
    find: str
    replace: str
    tests: list[str]
    why: str


@dataclass
class Result:
    name: str
    outcome: str  # "killed", "SURVIVED", "timeout" or "error"
    seconds: float
    detail: str = ""  # the first failing test, or what went wrong
    output: str = ""  # pytest's output

    @property
    def killed(self) -> bool:
        return self.outcome in ("killed", "timeout")


# -- the list ---------------------------------------------------------------------------


def parse_entry(index: int, entry) -> tuple[Mutation | None, list[str]]:
    """One ``[[mutation]]`` table -> (Mutation or None, problems)."""
    where = f"mutation #{index + 1}"
    if not isinstance(entry, dict):
        return None, [f"{where}: not a table"]
    if isinstance(entry.get("name"), str):
        where = f"mutation {entry['name']!r}"
    problems = [f"{where}: missing field {key!r}" for key in FIELDS if key not in entry]
    problems += [f"{where}: unknown field {key!r}" for key in entry if key not in FIELDS]
    problems += [f"{where}: {key!r} must be a string" for key in FIELDS
                 if key != "tests" and key in entry and not isinstance(entry[key], str)]
    tests = entry.get("tests")
    if "tests" in entry and not (isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests)):
        problems.append(f"{where}: 'tests' must be a non-empty list of strings")
    if problems:
        return None, problems
    return Mutation(**{key: entry[key] for key in FIELDS}), []


def load_mutations(path: Path) -> list[Mutation]:
    """The mutations of a TOML list; raises ListError when it is malformed."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ListError([f"{path}: {e}"]) from None
    unknown = [key for key in data if key != "mutation"]
    entries = data.get("mutation", [])
    if unknown or not isinstance(entries, list):
        raise ListError([f"{path}: only [[mutation]] tables are allowed (found {', '.join(unknown) or 'mutation'})"])
    mutations, problems = [], []
    for index, entry in enumerate(entries):
        mutation, found = parse_entry(index, entry)
        problems += found
        if mutation is not None:
            mutations.append(mutation)
    if problems:
        raise ListError(problems)
    return mutations


def is_copied(relative: str) -> bool:
    """Whether a repository-relative path lies inside what a mutant tree holds."""
    parts = Path(relative).parts
    return bool(parts) and parts[0] in COPIED and ".." not in parts and not Path(relative).is_absolute()


def path_of_test_arg(arg: str) -> str | None:
    """The file part of a pytest argument ("tests/x.py::test_y" -> "tests/x.py").

    None for what does not look like a path (no "/", "::" or ".py"): options
    such as "-k" and their values.
    """
    if arg.startswith("-") or not ("/" in arg or "::" in arg or arg.endswith(".py")):
        return None
    return arg.split("::", 1)[0]


def check_mutation(mutation: Mutation, root: Path) -> list[str]:
    """Problems of one mutation against the tree at ``root``: file, snippet and test paths."""
    problems = []
    path = root / mutation.file
    if not is_copied(mutation.file):
        problems.append(f"{mutation.file} is outside what is copied ({', '.join(COPIED)})")
    elif not path.is_file():
        problems.append(f"no file {mutation.file}")
    else:
        count = path.read_text(encoding="utf-8").count(mutation.find)
        if count != 1:
            problems.append(f"'find' occurs {count} times in {mutation.file}, not once")
    if mutation.find == mutation.replace:
        problems.append("'replace' is the same as 'find'")
    for arg in mutation.tests:
        target = path_of_test_arg(arg)
        if target is not None and not (root / target).exists():
            problems.append(f"no test path {target}")
    return problems


def duplicate_names(mutations: list[Mutation]) -> list[str]:
    """One problem per name used more than once."""
    names = [m.name for m in mutations]
    twice = sorted({n for n in names if names.count(n) > 1})
    return [f"mutation {n!r}: the name is used {names.count(n)} times" for n in twice]


def check_mutations(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """Every problem of the list against the tree at ``root``, one line each (empty: all good)."""
    problems = duplicate_names(mutations)
    for mutation in mutations:
        problems += [f"mutation {mutation.name!r}: {p}" for p in check_mutation(mutation, root)]
    return problems


def select(mutations: list[Mutation], names: list[str] | None) -> list[Mutation]:
    """The mutations called ``names`` (all when None); raises ListError for unknown names."""
    if not names:
        return mutations
    known = {m.name for m in mutations}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ListError([f"no mutation called {n!r}" for n in unknown])
    return [m for m in mutations if m.name in names]


# -- one run ---------------------------------------------------------------------------


def copy_tree(root: Path, dest: Path) -> None:
    """Copy what pytest needs (COPIED, without caches and build leftovers) from ``root`` into ``dest``."""
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=SKIPPED, symlinks=True)
        elif source.is_file():
            shutil.copy2(source, dest / name)


def apply_mutation(mutation: Mutation, tree: Path) -> None:
    """Replace the ``find`` snippet in the copy at ``tree``; ValueError unless it occurs exactly once."""
    path = tree / mutation.file
    text = path.read_text(encoding="utf-8")
    count = text.count(mutation.find)
    if count != 1:
        raise ValueError(f"'find' occurs {count} times in {mutation.file}, not once")
    path.write_text(text.replace(mutation.find, mutation.replace), encoding="utf-8")


def child_env(root: Path, tree: Path) -> dict[str, str]:
    """The environment of a run: ours, with PYTHONPATH on the copy and RNNLAB_DATA_DIR kept or defaulted.

    TMPDIR points into the copy, so runs at once never share pytest's
    /tmp/pytest-of-<user> folders and whatever the tests leave goes with the copy.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["TMPDIR"] = str(tree / "tmp")
    default_data = root.parent / "shared" / "data"
    if not env.get("RNNLAB_DATA_DIR") and default_data.is_dir():
        env["RNNLAB_DATA_DIR"] = str(default_data)
    return env


@dataclass
class PytestRun:
    returncode: int | None  # None: stopped at the timeout
    output: str


class Children:
    """The pytest runs under way. Each runs in a session of its own (so a timeout can kill
    the tests' own subprocesses with it), which Ctrl-C does not reach: ``stop`` kills them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running: set[int] = set()
        self.stopped = False

    def start(self, command: list[str], **kwargs) -> subprocess.Popen:
        with self.lock:
            if self.stopped:
                raise KeyboardInterrupt
            proc = subprocess.Popen(command, start_new_session=True, **kwargs)
            self.running.add(proc.pid)
        return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.running.discard(proc.pid)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            for pid in self.running:
                kill_group(pid)


CHILDREN = Children()


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_pytest(tree: Path, tests: list[str], env: dict[str, str], timeout: float) -> PytestRun:
    """pytest on ``tests`` in ``tree``; past ``timeout`` its whole process group is killed."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not peer", *tests]
    proc = CHILDREN.start(command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace")
    try:
        output, _ = proc.communicate(timeout=timeout)
        return PytestRun(proc.returncode, output)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        output, _ = proc.communicate()
        return PytestRun(None, output)
    finally:
        CHILDREN.done(proc)


def leading_test_id(text: str) -> str:
    """The test id that starts ``text``: up to the first space outside brackets.

    pytest's summary lines read "FAILED tests/x.py::test_y[a b[c]] - message";
    parametrize ids may hold spaces and brackets of their own.
    """
    depth = 0
    for i, char in enumerate(text):
        if char == " " and depth == 0:
            return text[:i]
        depth += (char == "[") - (char == "]")
    return text


def first_failure(output: str) -> str:
    """The first test id of pytest's "FAILED ..." lines (else "ERROR <id>" of its "ERROR ..." lines), or ""."""
    for kind, label in (("FAILED ", ""), ("ERROR ", "ERROR ")):
        for line in output.splitlines():
            if line.startswith(kind):
                return label + leading_test_id(line[len(kind):])
    return ""


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def classify(name: str, run: PytestRun, seconds: float) -> Result:
    """Turn pytest's exit code into a Result."""
    if run.returncode is None:
        outcome, detail = "timeout", first_failure(run.output) or "stopped at the timeout"
    elif run.returncode in KILLED_CODES:
        outcome, detail = "killed", first_failure(run.output) or last_line(run.output)
    elif run.returncode == 0:
        outcome, detail = "SURVIVED", last_line(run.output)  # "3 passed", or "3 skipped" without data
    elif run.returncode == 5:
        outcome, detail = "error", "no tests collected (exit 5)"
    else:
        outcome, detail = "error", f"pytest exit {run.returncode}: {last_line(run.output)}"
    return Result(name, outcome, seconds, detail, run.output)


def run_copy(name: str, tests: list[str], root: Path, timeout: float, mutation: Mutation | None = None) -> Result:
    """Copy the tree, plant ``mutation`` (if any) in the copy, run ``tests`` there; the real tree is untouched."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as tmp:
        tree = Path(tmp)
        copy_tree(root, tree)
        (tree / "tmp").mkdir()
        try:
            if mutation is not None:
                apply_mutation(mutation, tree)
        except (OSError, ValueError) as e:
            return Result(name, "error", time.monotonic() - start, str(e))
        run = run_pytest(tree, tests, child_env(root, tree), timeout)
    return classify(name, run, time.monotonic() - start)


def run_mutation(mutation: Mutation, root: Path = ROOT, timeout: float = DEFAULT_TIMEOUT) -> Result:
    """One mutation's Result; an "error" without running pytest when it no longer fits the code."""
    problems = check_mutation(mutation, root)
    if problems:
        return Result(mutation.name, "error", 0.0, problems[0])
    return run_copy(mutation.name, mutation.tests, root, timeout, mutation)


def run_baseline(mutations: list[Mutation], root: Path = ROOT, timeout: float = DEFAULT_TIMEOUT) -> Result:
    """Every listed test at once on an unmutated copy. It must pass ("SURVIVED"): a test that fails
    anyway (a tree in the middle of a refactor) would "kill" every mutation."""
    tests = list(dict.fromkeys(arg for m in mutations for arg in m.tests))
    return run_copy("baseline", tests, root, timeout)


def run_all(mutations: list[Mutation], root: Path = ROOT, jobs: int = 1,
            timeout: float = DEFAULT_TIMEOUT, progress=None) -> list[Result]:
    """Results in the list's order; ``jobs`` mutations at once; ``progress(result)`` as each ends."""
    results: list[Result | None] = [None] * len(mutations)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_mutation, m, root, timeout): i for i, m in enumerate(mutations)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = result = future.result()
                if progress is not None:
                    progress(result)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            CHILDREN.stop()
            raise
    return results


# -- report ------------------------------------------------------------------------------


def format_table(results: list[Result]) -> str:
    width = max([len("mutation")] + [len(r.name) for r in results])
    lines = [f"{'mutation':<{width}}  {'result':<8}  {'seconds':>7}  first failing test / note"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.outcome:<8}  {r.seconds:7.1f}  {r.detail}".rstrip())
    return "\n".join(lines)


def summary(results: list[Result]) -> str:
    killed = sum(r.killed for r in results)
    timeouts = sum(r.outcome == "timeout" for r in results)
    survived = sum(r.outcome == "SURVIVED" for r in results)
    errors = sum(r.outcome == "error" for r in results)
    line = f"{killed} killed, {survived} survived"
    if timeouts:
        line += f" ({timeouts} of the killed by timeout)"
    if errors:
        line += f", {errors} error{'s' if errors > 1 else ''}"
    return line


def exit_status(results: list[Result]) -> int:
    return 0 if all(r.killed for r in results) else 1


# -- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Plant the listed bugs one at a time and check the tests catch them.")
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help="the TOML list (default tools/mutations.toml)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--check", action="store_true", help="only check the list against the code; run no tests")
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="mutations run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help="seconds per mutation before it counts as killed by timeout (default 600)")
    parser.add_argument("--baseline", action="store_true",
                        help="first run all the listed tests on an unmutated copy; stop unless they pass")
    parser.add_argument("-v", "--verbose", action="store_true", help="after the table, print every run's pytest output")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: the one holding this tool)")
    return parser


def print_progress(total: int):
    done = []

    def progress(result: Result) -> None:
        done.append(result)
        print(f"[{len(done)}/{total}] {result.name}: {result.outcome} ({result.seconds:.1f} s)",
              file=sys.stderr, flush=True)

    return progress


def baseline_passes(mutations: list[Mutation], root: Path, timeout: float) -> bool:
    base = run_baseline(mutations, root, timeout)
    if base.outcome == "SURVIVED":
        print(f"baseline: {base.detail}", file=sys.stderr, flush=True)
        return True
    outcome = "failed" if base.outcome == "killed" else base.outcome
    print(f"baseline: the listed tests do not pass without a mutation ({outcome}: {base.detail})")
    return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.root.resolve()
    try:
        mutations = select(load_mutations(args.list), args.only)
    except ListError as e:
        print("\n".join(e.problems))
        return 1
    if args.check:
        problems = check_mutations(mutations, root)
        print("\n".join(problems) if problems else f"{len(mutations)} mutations, all good")
        return 1 if problems else 0
    if duplicate_names(mutations):
        print("\n".join(duplicate_names(mutations)))
        return 1
    try:
        if args.baseline and not baseline_passes(mutations, root, args.timeout):
            return 1
        results = run_all(mutations, root, args.jobs, args.timeout, print_progress(len(mutations)))
    except KeyboardInterrupt:
        CHILDREN.stop()
        print("interrupted: the running mutants were stopped", file=sys.stderr)
        return 130
    if args.verbose:
        for r in results:
            print(f"===== {r.name}: {r.outcome} =====\n{r.output.rstrip()}\n")
    print(format_table(results))
    print(summary(results))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
