"""pyproject.toml: the same pins as requirements.txt (the cluster extra's as
requirements-cluster.txt), torch pinned exactly, the library alone in the wheel, and a
``localist`` command that is ``python -m localist_core``."""
import ast
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# An import name that is not its distribution's name.
DISTRIBUTION_OF = {"yaml": "pyyaml"}
# Extras kept in a requirements file of their own (not requirements.txt), and the one module
# of the library that may import each, lazily (inside a function).
OWN_REQUIREMENTS = {"cluster": "requirements-cluster.txt"}
LAZY_IMPORTS = {"ray": "localist_core/experiments/executors.py"}


def _pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines as {normalised name: version}; anything but ``==`` fails."""
    pins = {}
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;,<>=!~]+)", line.strip())
        assert m, f"not an exact pin: {line!r}"
        pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def _requirements(name: str = "requirements.txt") -> dict[str, str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return _pins([x for x in lines if x.strip() and not x.lstrip().startswith("#")])


def test_pyproject_pins_are_requirements_txt():
    core = _pins(PROJECT["dependencies"])
    extras = {name: _pins(deps) for name, deps in PROJECT["optional-dependencies"].items()}
    everything, seen = dict(core), set(core)
    for name, pins in extras.items():
        assert not set(pins) & seen, "a package is listed twice"
        seen |= set(pins)
        if name in OWN_REQUIREMENTS:
            assert pins == _requirements(OWN_REQUIREMENTS[name]), name
        else:
            everything.update(pins)
    assert everything == _requirements()
    assert core["torch"] == "2.13.0"           # exactly: a range pulls a multi-GB CUDA build
    assert {"streamlit", "plotly", "altair"} <= set(extras["app"])
    assert not {"streamlit", "plotly", "altair", "pytest"} & set(core)


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_library_needs_only_its_core_dependencies():
    """Every third-party import in localist_core is a core dependency (not an extra), except an
    extra's package imported lazily, inside a function of the one module that runs it."""
    core = set(_pins(PROJECT["dependencies"]))
    imported, lazy = set(), {}
    for path in (ROOT / "localist_core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_functions = set().union(*(_imports(f) for f in ast.walk(tree)
                                     if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))))
        top_level = _imports(tree) - in_functions
        imported |= top_level
        for name in in_functions - top_level:
            if name in LAZY_IMPORTS:
                lazy.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
            else:
                imported.add(name)
    third_party = imported - set(sys.stdlib_module_names) - {"localist_core", "__future__"}
    assert {DISTRIBUTION_OF.get(m, m) for m in third_party} <= core
    assert not set(LAZY_IMPORTS) & third_party, "an extra imported at a module's top level"
    assert lazy == {name: {module} for name, module in LAZY_IMPORTS.items()}
    cluster = _pins(PROJECT["optional-dependencies"]["cluster"])
    assert set(LAZY_IMPORTS) <= set(cluster)


def test_ci_installs_every_requirements_file():
    """The tests of an extra kept in its own file (tests/test_executors.py) run in CI."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for name in ["requirements.txt", *OWN_REQUIREMENTS.values()]:
        assert f"-r {name}" in ci, name


def test_the_wheel_holds_the_library_only():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["localist_core*"]
    assert PROJECT["requires-python"] == ">=3.11"


def test_localist_command_is_the_cli_main():
    target = PROJECT["scripts"]["localist"]
    assert target == "localist_core.cli:main"
    module, _, name = target.partition(":")
    from localist_core.cli import main
    assert getattr(importlib.import_module(module), name) is main


def test_python_m_localist_core_help():
    out = subprocess.run([sys.executable, "-m", "localist_core", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: python -m localist_core ")
    for command in ("train", "sweep", "eval", "export", "report"):
        assert command in out.stdout
