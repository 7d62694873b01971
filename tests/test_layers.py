"""Imports run one way (STYLE.md "Layers"): ``pages → ui → localist_core``, and inside the core
``cli → experiments → analysis → model``. Each layer imported alone loads nothing from above it,
and no source file names a module of a layer above its own."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The core's folders (or modules) and the dashboard's, bottom to top; a module may import from
# its own layer and those below. localist_core/__init__.py is checked apart: model only.
CORE_LAYERS = {"paths": 0, "model": 0, "analysis": 1, "experiments": 2, "cli": 3, "__main__": 3}
UI, PAGES = 4, 5
PAGE_MAY_IMPORT = {"ui", "streamlit", "pandas", "plotly"}   # and the standard library
DASHBOARD_ONLY = ("streamlit", "plotly")


# -- (a) each layer imported alone -----------------------------------------------------------------

@pytest.mark.parametrize("module", ["localist_core", "localist_core.model",
                                    "localist_core.analysis", "localist_core.experiments",
                                    "localist_core.cli"])
def test_each_core_layer_imports_without_the_dashboard(module):
    # torch.hub imports tqdm whenever it is installed, so a look at sys.modules cannot tell who
    # loaded it: for the model layer tqdm is blocked instead (torch falls back without it), and
    # an import of tqdm by our own code fails loudly.
    no_tqdm = module in ("localist_core", "localist_core.model")
    code = ("import sys\n"
            + ("sys.modules['tqdm'] = None\n" if no_tqdm else "")
            + f"import {module}\n"
            f"print(sorted(m for m in {DASHBOARD_ONLY!r} if sys.modules.get(m)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"importing {module} failed" + (
        " (does it import tqdm?)" if no_tqdm else "") + f":\n{out.stderr[-2000:]}"
    assert out.stdout.split("\n")[-2] == "[]", f"{module} loads {out.stdout.strip()}"


# -- (b) no source file imports from above its layer -----------------------------------------------

def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, at any depth (inside functions too), relative
    ones resolved; ``from a import b`` gives ``a.b`` when ``b`` is a module of the tree."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}".replace(".", "/")
                is_module = (root / f"{sub}.py").is_file() or (root / sub).is_dir()
                out.append((node.lineno, f"{base}.{a.name}" if is_module else base))
    return out


def _layer(module: str) -> int | str | None:
    """The layer of a module of this repository; None for anything else (stdlib, third party);
    "unknown" for a core module without a layer."""
    top, _, rest = module.partition(".")
    if top == "localist_core":
        return CORE_LAYERS.get(rest.split(".")[0], "unknown") if rest else 0
    return {"ui": UI, "app_pages": PAGES, "app": PAGES}.get(top)


def layer_violations(root: Path) -> list[str]:
    """Every import in localist_core/, ui/, app_pages/ and app.py that runs against the layers."""
    files = [root / "app.py"] + [p for d in ("localist_core", "ui", "app_pages")
                                 for p in sorted((root / d).rglob("*.py"))]
    problems = []
    for path in (p for p in files if p.is_file()):
        name, where = _module_name(path, root), path.relative_to(root)
        own = _layer(name)
        if own == "unknown":
            problems.append(f"{where}: no layer for {name} (add it to CORE_LAYERS)")
            continue
        for line, target in _imports(path, root):
            top = target.partition(".")[0]
            theirs = _layer(target)
            if own < UI and top in DASHBOARD_ONLY:
                bad, why = True, "the core never imports the dashboard's libraries"
            elif name == "localist_core":
                bad = top == "localist_core" and not target.startswith("localist_core.model")
                why = "the package may import from its model layer only"
            elif own == PAGES:
                bad = top not in PAGE_MAY_IMPORT and top not in sys.stdlib_module_names
                why = "a page imports ui (and streamlit, pandas, plotly), nothing else"
            else:
                bad = theirs == "unknown" or (theirs is not None and theirs > own)
                why = "a layer above it"
            if bad:
                problems.append(f"{where}:{line} imports {target}: {why}")
    return problems


def test_no_module_imports_from_a_layer_above_it():
    assert layer_violations(ROOT) == []


PLANTED = {
    "localist_core/model/bad.py": "def f():\n    from ..analysis import metrics\n",
    "localist_core/analysis/bad.py": "import ui.figures\n",
    "localist_core/experiments/bad.py": "from localist_core.cli import main\n",
    "localist_core/analysis/plots.py": "def f():\n    import plotly\n",
    "localist_core/__init__.py": "from .experiments import train\n",
    "ui/bad.py": "from app_pages import explorer\n",
    "app_pages/bad.py": "import ui\nfrom localist_core.analysis.inspection import difference\n",
    "app.py": "import torch\n",
}


def test_a_planted_violation_is_found(tmp_path):
    clean = {"localist_core/model/ok.py": "from .config import X\nfrom ..paths import REPO\n",
             "localist_core/analysis/ok.py": "from ..model import config\n",
             "localist_core/cli/__init__.py": "from ..experiments import sweep\n",
             "ui/ok.py": "from localist_core.cli import main\nfrom ui import figures\n",
             "app_pages/ok.py": "import json\nimport streamlit\nimport ui\nfrom ui import views\n"}
    for rel, text in {**clean, **PLANTED}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "localist_core/model/config.py").write_text("X = 1\n")
    (tmp_path / "localist_core/paths.py").write_text("REPO = 1\n")
    (tmp_path / "ui/figures.py").write_text("")
    (tmp_path / "ui/views.py").write_text("")
    found = layer_violations(tmp_path)
    assert sorted({p.split(":")[0] for p in found}) == sorted(PLANTED), found
    assert len(found) == len(PLANTED), found  # app_pages/bad.py: import ui is fine
