"""The device side must run on JetPack 5.1's Python 3.8 (`make test` checks it on any Python).

vermin (pinned in requirements-dev.txt) checks grammar and standard-library use against 3.8. It
does not see builtin generics (`list[int]`) or `X | Y` unions in expressions that run (a cast, an
alias, an isinstance): with `from __future__ import annotations` they are fine in annotations
only, so a small AST walk checks those.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What runs on the device: the runtime, the engine builder and its CLI, the precision planner, the
# legacy calibrator and the calibration-set module it imports, and the GPU tests with their conftest.
DEVICE_FILES = sorted(
    [p for p in (ROOT / "runtime").rglob("*.py")]
    + [ROOT / "build_engine" / name for name in ("__init__.py", "__main__.py", "builder.py", "trt_config.py", "trt_api.py",
                                                 "precision.py")]
    + [ROOT / "calibration" / name for name in ("__init__.py", "trt_calibrator.py", "dataset.py")]
    + [ROOT / "tests" / name for name in ("conftest.py", "test_gpu.py", "test_cuda.py")]
)
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def vermin(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("vermin")), "-t=3.8-", "--violations", "--no-tips",
                           *map(str, paths)], capture_output=True, text=True, timeout=120)


def annotation_nodes(tree: ast.AST) -> set:
    """ids of the annotation expressions (PEP 563 keeps them as strings: never evaluated)."""
    annotations = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            annotations.update(id(a.annotation) for a in args if a is not None and a.annotation is not None)
            if node.returns is not None:
                annotations.add(id(node.returns))
        elif isinstance(node, ast.AnnAssign):
            annotations.add(id(node.annotation))
    return annotations


def runtime_expressions(tree: ast.AST, annotations: set):
    """Every node that Python evaluates, and whether it lies in an annotation."""
    skipped = set()
    for node in ast.walk(tree):
        if id(node) in annotations:
            skipped.update(id(child) for child in ast.walk(node))
        yield node, id(node) in skipped


def newer_than_38(source: str, name: str = "<source>") -> list:
    """`list[int]`-style generics and `X | None`-style unions outside annotations."""
    tree = ast.parse(source, name)
    postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
                    for n in tree.body)
    found = []
    for node, in_annotation in runtime_expressions(tree, annotation_nodes(tree)):
        if in_annotation and postponed:
            continue
        where = f"{name}:{getattr(node, 'lineno', 0)}: " + ("annotation without `from __future__ import annotations`: "
                                                            if in_annotation else "")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in BUILTIN_GENERICS:
            found.append(f"{where}{node.value.id}[...] evaluated at run time (3.9+)")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and any(
                isinstance(side, ast.Constant) and side.value is None or isinstance(side, ast.Name) and side.id in
                BUILTIN_GENERICS | {"int", "float", "str", "bytes", "bool"} for side in (node.left, node.right)):
            found.append(f"{where}X | Y union evaluated at run time (3.10+)")
    return found


def test_the_device_files_are_the_ones_that_exist():
    missing = [str(p) for p in DEVICE_FILES if not p.is_file()]
    assert not missing and len(DEVICE_FILES) > 20


def test_vermin_finds_nothing_newer_than_python_38_on_the_device_side():
    result = vermin(*DEVICE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_would_catch_a_39_feature(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    with (open('a') as a, open('b') as b):\n        return 'xa'.removeprefix('x')\n")
    result = vermin(bad)
    assert result.returncode != 0 and "removeprefix" in result.stdout and "with" in result.stdout


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_builtin_generics_or_unions_run_on_the_device(path):
    assert newer_than_38(path.read_text(), str(path.relative_to(ROOT))) == []


def test_the_generics_check_sees_what_vermin_misses_and_ignores_annotations():
    good = "from __future__ import annotations\nimport typing\nx: list[int] = []\n\ndef f(a: dict[str, int] | None) -> tuple[int, ...]:\n    flags = 1 | 2\n    return typing.cast(typing.Tuple[int, ...], ())\n"
    assert newer_than_38(good) == []
    bad = ("from __future__ import annotations\nimport typing\nAlias = dict[str, int]\n\n"
           "def f(a):\n    return typing.cast(list[int], a), isinstance(a, int | None)\n")
    assert [line.split(": ", 1)[1] for line in newer_than_38(bad)] == [
        "dict[...] evaluated at run time (3.9+)", "list[...] evaluated at run time (3.9+)", "X | Y union evaluated at run time (3.10+)"]
    assert "without `from __future__" in newer_than_38("def f(a: list[int]): pass\n")[0]
    assert newer_than_38("def f(a: int): pass\n") == []
