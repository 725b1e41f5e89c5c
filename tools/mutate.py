"""A small mutation tester: does a test selection fail when the code it tests is changed in a simple way?

Each mutant changes one AST node of one file: a comparison operator flipped (``<`` ↔ ``>=``, ``==`` ↔ ``!=``,
``in`` ↔ ``not in``, ``is`` ↔ ``is not``), a number ``c`` replaced by ``c + 1``, ``and`` ↔ ``or``, a returned value
replaced by ``None``, or an ``if`` condition negated. The mutant is written over the file, the given pytest
selection runs against it (with a timeout: a hang counts as killed), and the file is restored byte for byte with its
modification time. Mutants the selection still passes are printed as ``file:line: mutation (column c)``; each
one is either a missing test or a change that does not matter (an equivalent mutant), which only a reader can tell
apart.

    python tools/mutate.py --files pipeline/engine/prompts.py --max-mutants 40 -- tests/engine/test_prompts.py

Everything after ``--`` goes to pytest. Only the standard library and pytest are needed. The exit status is 1 when
a mutant survived, so the script can gate a test selection.
"""

from __future__ import annotations

import argparse
import ast
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "pipeline" / "peft").rglob("*.py")) + [
    "pipeline/engine/prompts.py"
]
FLIPPED = {
    ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
Mutant = tuple[int, str, Callable[[], None]]  # line, description (with the column), the in-place change


def symbol(op: ast.AST) -> str:
    return ast.unparse(ast.Compare(ast.Name("a"), [op], [ast.Name("b")]))[2:-2]


def node_mutants(node: ast.AST) -> Iterator[tuple[str, Callable[[], None]]]:
    if isinstance(node, ast.Compare):
        for index, op in enumerate(node.ops):
            if type(op) in FLIPPED:
                new = FLIPPED[type(op)]()
                yield f"{symbol(op)} -> {symbol(new)}", lambda i=index, o=new: node.ops.__setitem__(i, o)
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        yield f"{node.value!r} -> {node.value + 1!r}", lambda: setattr(node, "value", node.value + 1)
    elif isinstance(node, ast.BoolOp):
        new, name = (ast.Or(), "and -> or") if isinstance(node.op, ast.And) else (ast.And(), "or -> and")
        yield name, lambda: setattr(node, "op", new)
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "return value -> return None", lambda: setattr(node, "value", ast.Constant(None))
    elif isinstance(node, ast.If):
        yield "if condition negated", lambda: setattr(node, "test", ast.UnaryOp(ast.Not(), node.test))


def mutants(tree: ast.Module) -> list[Mutant]:
    """Every mutation of ``tree`` in source order; calling a mutant's change edits ``tree`` in place."""
    nodes = sorted((n for n in ast.walk(tree) if hasattr(n, "lineno")), key=lambda n: (n.lineno, n.col_offset))
    return [(node.lineno, f"{description} (column {node.col_offset + 1})", change)
            for node in nodes for description, change in node_mutants(node)]


def mutant_source(source: str, index: int) -> tuple[int, str, str]:
    """The line, description and full source of the ``index``-th mutant of ``source``."""
    tree = ast.parse(source)
    line, description, change = mutants(tree)[index]
    change()
    return line, description, ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def run_tests(pytest_args: list[str], timeout: float) -> bool:
    """Whether the selection passes; a run past ``timeout`` is stopped (its whole process group) and fails."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *pytest_args]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        return process.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage="%(prog)s [options] -- PYTEST_ARGS")
    parser.add_argument("--files", nargs="+", default=DEFAULT_FILES, help="files to mutate (relative to the repo)")
    parser.add_argument("--max-mutants", type=int, default=50, help="stop after this many mutants in all")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per test run; longer counts as killed")
    parser.add_argument("--list", action="store_true", help="print the mutants without running anything")
    args = parser.parse_args(ours)
    if not pytest_args and not args.list:
        parser.error("give the pytest selection after --, e.g. -- tests/peft/test_spec.py")
    for name in args.files:
        if not (REPO / name).is_file():
            parser.error(f"--files: {name} is not a file under {REPO}")

    if not args.list and not run_tests(pytest_args, args.timeout):
        print("the test selection fails (or times out) on the unmutated code; fix that first", file=sys.stderr)
        return 2
    tried, survivors = 0, []
    for name in args.files:
        path = REPO / name
        original, stat = path.read_bytes(), path.stat()
        count = len(mutants(ast.parse(original)))
        for index in range(min(count, args.max_mutants - tried)):
            line, description, source = mutant_source(original.decode(), index)
            tried += 1
            if args.list:
                print(f"{name}:{line}: {description}")
                continue
            try:
                path.write_text(source)
                # a distinct whole-second mtime: a cached .pyc of the original (or of another mutant) never matches
                os.utime(path, (stat.st_atime, stat.st_mtime + 1000 + tried))
                survived = run_tests(pytest_args, args.timeout)
            finally:
                path.write_bytes(original)
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            if survived:
                survivors.append(f"{name}:{line}: {description}")
                print(f"{name}:{line}: {description}", flush=True)
        if tried >= args.max_mutants:
            break
    if not args.list:
        print(f"{tried} mutants, {tried - len(survivors)} killed, {len(survivors)} survived", file=sys.stderr)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
