"""The layout's rules, checked: the device core never imports TensorFlow, Keras, tf2onnx, onnx or
onnxconverter-common; imports point one way (build_engine -> calibration -> runtime, and inside
runtime: app -> core); the import graph has no cycle."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGES = ("build_engine", "calibration", "runtime")
FORBIDDEN_ON_DEVICE = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def device_core_modules() -> list:
    """Every module of `runtime` outside `runtime.app` (the application) and `__main__`."""
    return [m for m in all_modules() if m.startswith("runtime") and not m.startswith("runtime.app")
            and not m.endswith("__main__")]


def imports_of(path: Path, known: set) -> set:
    """Project modules imported anywhere in the file (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def test_device_core_covers_the_runner_stack():
    core = device_core_modules()
    for expected in ("runtime.factory", "runtime.backends.base", "runtime.backends.onnxrt", "runtime.backends.trt",
                     "runtime.backends.cuda_mem", "runtime.preprocess", "runtime.postprocess", "runtime.metadata",
                     "runtime.naming", "runtime.metrics", "runtime.manifest"):
        assert expected in core


def test_device_core_leaves_framework_packages_out():
    code = (
        "import importlib, sys\n"
        f"for m in {device_core_modules()!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_ON_DEVICE!r})\n"
        "print(bad)\nassert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def rank(module: str) -> int:
    """Higher may import lower, never the reverse."""
    if module.startswith("build_engine"):
        return 3
    if module.startswith("calibration"):
        return 2
    if module.startswith("runtime.app") or module == "runtime.__main__":
        return 1
    return 0


def test_imports_point_one_way():
    upward = [(a, b) for a, deps in graph().items() for b in deps if rank(b) > rank(a) and b != "runtime"]
    assert not upward, upward


def find_cycle(edges: dict):
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return path + [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [])
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    edges = graph()
    # `runtime/__init__` re-exports the public API; a package's own __init__ is not an edge of the design.
    for deps in edges.values():
        deps.discard("runtime")
    assert find_cycle(edges) is None, find_cycle(edges)


def test_cycle_finder_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


@pytest.mark.parametrize("limit_lines", [400])
def test_no_file_is_too_long(limit_lines):
    long_files = {name: len(path.read_text().splitlines()) for name, path in all_modules().items()
                  if len(path.read_text().splitlines()) > limit_lines}
    assert not long_files, long_files


def long_functions(limit: int) -> dict:
    found = {}
    for name, path in all_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit:
                found[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    return found


def test_no_function_is_too_long():
    assert not long_functions(60), long_functions(60)


def test_readme_layout_names_every_module():
    """README's layout section lists each module by file name, so it cannot drift from the tree."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## The layout"):readme.index("### The device core as a library")]
    missing = sorted(str(path.relative_to(ROOT)) for path in all_modules().values()
                     if path.name != "__init__.py" and path.name not in layout)
    assert not missing, f"add these to README's layout section: {missing}"
