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


# ------------------------------------------------------------------ the bar path's size

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 50


def oversized(name: str, text: str) -> list[str]:
    """What in one module is over the limits: the module's lines, each function's."""
    problems = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        problems.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                problems.append(f"{name}: {node.name} is {length} lines (at most {MAX_FUNCTION_LINES})")  # fmt: skip
    return problems


def limited_modules() -> list[str]:
    """The modules the diagram names, and every other module of the feeds and the daemon
    (the simulator, a test double of the exchanges, aside)."""
    named = {m for m in MODULE.findall(diagram()) if m.endswith(".py")}
    assert len(named) > 15, "the diagram names the modules on the path"
    packages = {str(p.relative_to(ROOT)) for d in ("streamer", "inference") for p in (ROOT / d).glob("*.py")}  # fmt: skip
    return sorted(named | packages)


def test_the_bar_path_is_small_modules_of_short_functions() -> None:
    modules = limited_modules()
    assert {"streamer/store.py", "inference/barloop.py", "inference/daemon.py"} <= set(modules)
    problems = [p for m in modules for p in oversized(m, (ROOT / m).read_text())]
    assert not problems, "split by concern: " + "; ".join(problems)


#: How many Python modules the bar path may pass (the diagram names them; the bar itself
#: is checked against it in tests/test_bar_path.py). Six was the aim; the path's code is
#: about 4,000 lines, more than six modules of at most 300 lines hold, so this only
#: keeps the path from growing.
MAX_PATH_MODULES = 22


def test_the_bar_path_passes_no_more_modules_than_it_does_now() -> None:
    named = {m for m in MODULE.findall(diagram()) if m.endswith(".py")}
    assert len(named) <= MAX_PATH_MODULES, (
        f"the bar path passes {len(named)} modules: {sorted(named)}"
    )


def test_the_size_check_catches_a_long_function_and_a_long_module() -> None:
    long_function = "def f() -> int:\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "    return x\n"
    assert oversized("m.py", long_function) == [f"m.py: f is {MAX_FUNCTION_LINES + 2} lines (at most {MAX_FUNCTION_LINES})"]  # fmt: skip
    long_module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert oversized("m.py", long_module) == [f"m.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})"]  # fmt: skip


# ------------------------------------------------------------------ named once

#: the one module that spells the target names (every other one imports them)
TARGETS_MODULE = "whalecast/targets.py"
TARGET_NAMES = ("p_up_next_bar", "next_bar_volume")
#: the one module with the backoff formula (``initial * 2 ** attempts``)
BACKOFF_MODULE = "streamer/backoff.py"


def sources() -> list[tuple[str, ast.Module]]:
    out = []
    for package in (*PACKAGES, "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            out.append((str(path.relative_to(ROOT)), ast.parse(path.read_text())))
    return out


def docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring constants of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def spelled_targets(name: str, tree: ast.Module) -> list[str]:
    skip = docstrings(tree)
    return [
        f"{name}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        and any(target in node.value for target in TARGET_NAMES)
    ]  # fmt: skip


def doubling(name: str, tree: ast.Module) -> list[str]:
    return [
        f"{name}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)
        and isinstance(node.left, ast.Constant) and node.left.value in (2, 2.0)
        and not isinstance(node.right, ast.Constant)  # 2**20 is a unit, 2**n a doubling
    ]  # fmt: skip


def test_target_names_and_the_backoff_formula_are_written_once() -> None:
    trees = sources()
    spelled = [w for name, tree in trees if name != TARGETS_MODULE for w in spelled_targets(name, tree)]  # fmt: skip
    assert not spelled, f"use whalecast.targets.DIRECTION / VOLUME instead of literals: {spelled}"
    doubled = [w for name, tree in trees if name != BACKOFF_MODULE for w in doubling(name, tree)]
    assert not doubled, f"use streamer.backoff (ceiling or Backoff) instead of 2 ** n: {doubled}"
    assert spelled_targets(TARGETS_MODULE, dict(trees)[TARGETS_MODULE])
    assert doubling(BACKOFF_MODULE, dict(trees)[BACKOFF_MODULE])


def test_the_literal_check_skips_docstrings_only() -> None:
    tree = ast.parse('"""p_up_next_bar is a target."""\nX = {"next_bar_volume": 1}\n')
    assert spelled_targets("m.py", tree) == ["m.py:2"]


def test_the_doubling_check_tells_a_unit_from_a_backoff() -> None:
    tree = ast.parse("mib = rss / 2**20\ndelay = initial * 2.0 ** attempts\n")
    assert doubling("m.py", tree) == ["m.py:2"]
