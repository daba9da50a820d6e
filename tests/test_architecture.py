"""docs/architecture.md stays true: every module, class and function it names exists."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("whalecast", "streamer", "inference", "training")
MODULE = re.compile(r"\b((?:whalecast|streamer|inference|training)/[\w/]*\.(?:py|lua))\b")
#: ``Class.method`` in the bar path diagram, and the bare functions it names.
DOTTED = re.compile(r"\b([A-Z]\w+)\.(\w+)\b")
CALLED = re.compile(r"(?:→|─|\s)([a-z_][a-z0-9_]+)(?=\s|$|,)")


def diagram() -> str:
    text = DOC.read_text()
    return text.split("```text", 1)[1].split("```", 1)[0]


@cache
def definitions() -> tuple[dict[str, set[str]], set[str]]:
    """Every class (with its methods) and every module-level function of our packages."""
    classes: dict[str, set[str]] = {}
    functions: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef):
                    methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}  # fmt: skip
                    classes.setdefault(node.name, set()).update(methods)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    functions.add(node.name)
    return classes, functions


def test_every_module_named_exists() -> None:
    named = set(MODULE.findall(DOC.read_text()))
    assert len(named) > 20, "the module map names the modules"
    missing = sorted(m for m in named if not (ROOT / m).is_file())
    assert not missing, f"docs/architecture.md names modules that no longer exist: {missing}"


def test_every_function_on_the_bar_path_exists() -> None:
    classes, functions = definitions()
    text = diagram()
    dotted = DOTTED.findall(text)
    assert len(dotted) > 15, "the diagram names the functions on its arrows"
    missing = [f"{c}.{m}" for c, m in dotted if m not in classes.get(c, set()) and m != "lua"]
    words = {w for w in CALLED.findall(text) if "_" in w and not w.startswith("_")}
    missing += sorted(w for w in words if w not in functions and not w.endswith("_py"))
    assert not missing, f"docs/architecture.md names functions that no longer exist: {missing}"


def test_the_check_catches_a_renamed_module() -> None:
    renamed = "inference/barloop.py".replace("barloop", "bar_loop")
    assert not (ROOT / renamed).is_file()
    assert MODULE.findall(f"see `{renamed}`") == [renamed]
