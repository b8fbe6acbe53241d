"""Help that teaches: every CLI and subcommand shows its defaults and an example; `make help` lists
every target and how to run the chain on one's own model."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, run_module


def parsers():
    from build_engine.__main__ import parser as build_engine
    from calibration.__main__ import parser as calibration
    from runtime.app.bench import parser as bench
    from runtime.app.demo import parser as demo

    found = {}
    for name, make in {"build_engine": build_engine, "calibration": calibration, "runtime demo": demo,
                       "runtime bench": bench}.items():
        top = make()
        found[name] = top
        for action in top._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.update({f"{name} {sub}": p for sub, p in action.choices.items()})
    return found


ALL = parsers()


def test_every_command_is_covered():
    assert set(ALL) >= {"build_engine train", "build_engine export", "build_engine engine", "calibration fp16",
                        "calibration quantize", "calibration evaluate", "runtime demo", "runtime bench"}


@pytest.mark.parametrize("name", sorted(ALL))
def test_help_shows_defaults_and_an_example(name):
    text = ALL[name].format_help()
    assert "examples:" in text and re.search(r"\n  python -m \S+", text.split("examples:")[1]), text
    options_with_defaults = [a for a in ALL[name]._actions
                             if a.default not in (None, False, argparse.SUPPRESS) and a.option_strings]
    for action in options_with_defaults:
        assert action.help, f"{name} {action.option_strings[0]} has a default but no help to show it"
    if options_with_defaults:
        assert "(default: " in text


def test_runtime_usage_has_examples():
    result = run_module("runtime", "--help", timeout=60)
    assert result.returncode == 0 and "python -m runtime demo --serve" in result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_target_and_how_to_use_ones_own_model():
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^\s+make ([\w-]+)", result.stdout, re.M))
    assert set(phony) <= listed, set(phony) - listed
    assert {"setup", "clean", "typecheck"} <= listed
    assert re.search(r"make onnx MODEL=\S+ ARTIFACTS=\S+", result.stdout)
