"""The wheel is complete: what the code imports at run time is what pyproject.toml declares, and the
wheel carries the experiment configs and the embedded checkpoints. (.ci/run goes further: it installs
the wheel into a fresh environment and runs ``specvlm demo`` and ``specvlm-eval tiny --limit 1`` from
a directory outside the repository.)"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("specvlm", "pruning", "eval")  # the folders
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
#: folder -> installed name: eval/ and pruning/ install as specvlm_eval and specvlm_pruning
INSTALLED = {folder: name for name, folder in SETUPTOOLS["package-dir"].items()}
#: import name -> distribution name, for the names that differ (the rest are the same)
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "lmms_eval": "lmms-eval", "flash_attn": "flash-attn"}
#: imports that belong to an extra, by module (a module importing them is loaded only with that extra)
EXTRA_IMPORTS = {"lmms-eval": "lmms", "tqdm": "lmms", "flash-attn": "flash", "pyarrow": "eval"}
#: declared dependencies never imported by name, and why they are needed all the same
NOT_IMPORTED = {
    "torchvision": "transformers' video and fast image processors import it",
    "accelerate": "transformers' device_map='auto' and `accelerate launch -m specvlm_eval` use it",
    "filelock": "lmms-eval 0.7.3 imports filelock._api, which filelock 4 removed (a pin, in [lmms])",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def _declared() -> dict[str, set[str]]:
    """{"": main dependencies, extra: its dependencies}, as distribution names."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {"": {_name(r) for r in project["dependencies"]}}
    for extra, requirements in project["optional-dependencies"].items():
        out[extra] = {_name(r) for r in requirements}
    return out


def _imports() -> dict[str, set[str]]:
    """{distribution name: files importing it} over every module of the three packages."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
                      and node.args and isinstance(node.args[0], ast.Constant)):  # importlib.import_module("x")  # fmt: skip
                    names = [node.args[0].value]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in INSTALLED.values() or top in ("specvlm", "__future__"):
                        continue
                    found.setdefault(DISTRIBUTIONS.get(top, top).lower(), set()).add(str(path.relative_to(REPO)))
    return found


def test_runtime_imports_equal_declared_dependencies():
    declared, imported = _declared(), _imports()
    for dist, files in sorted(imported.items()):
        extra = EXTRA_IMPORTS.get(dist, "")
        assert dist in declared[extra], (
            f"{dist} is imported by {sorted(files)} but not declared in "
            f"{'[project.dependencies]' if not extra else f'[{extra}]'} of pyproject.toml"
        )
    for dist in declared[""] | declared["lmms"] | declared["flash"] | declared["eval"]:
        assert dist in imported or dist in NOT_IMPORTED, f"{dist} is declared but nothing imports it"
    assert "safetensors" in declared[""] and "safetensors" in imported  # specvlm/loading.py, at run time


def _installed(path: Path) -> str:
    """``eval/bench/pair.py`` -> ``specvlm_eval/bench/pair.py``: where a source file lies in the wheel."""
    parts = path.relative_to(REPO).parts
    return "/".join((INSTALLED.get(parts[0], parts[0]), *parts[1:]))


def test_no_installed_name_a_user_folder_can_shadow():
    """The wheel installs no top-level ``eval`` or ``pruning`` (tests/project/test_installed_names.py runs the
    commands beside such folders), and every folder holding Python files is a listed package, since setuptools
    cannot find a renamed folder by itself."""
    assert INSTALLED == {"eval": "specvlm_eval", "pruning": "specvlm_pruning"}
    listed = set(SETUPTOOLS["packages"])
    assert not {p for p in listed if p.split(".")[0] in ("eval", "pruning")}
    folders = {_installed(f.parent).replace("/", ".") for package in PACKAGES for f in (REPO / package).rglob("*.py")}
    assert folders <= listed, f"missing from [tool.setuptools] packages in pyproject.toml: {sorted(folders - listed)}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["specvlm-eval"] == "specvlm_eval.cli:main"
    assert project["entry-points"]["lmms_eval.models"]["specvlm"] == "specvlm_eval.lmms:manifest"


def test_the_wheel_ships_configs_and_checkpoints(tmp_path):
    """Built from a copy of the sources (nothing is written into the repository)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*PACKAGES, "configs"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    assert (src / "eval" / "configs").is_symlink()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel here without build isolation: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("specvlm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    configs = {p.name for p in (REPO / "configs").glob("*.yaml")}
    assert {"tiny.yaml", "synthetic.yaml"} <= configs
    assert {f"specvlm_eval/configs/{c}" for c in configs} <= names
    sources = {_installed(f) for package in PACKAGES for f in (REPO / package).rglob("*.py") if "__pycache__" not in f.parts}
    assert sources <= names, sorted(sources - names)
    assert not {n for n in names if n.split("/")[0] in ("eval", "pruning")}
    for role in ("target", "draft"):
        assert f"specvlm/zoo/specvlm-tiny-{role}/model.safetensors" in names
    requires = {_name(line.split(":", 1)[1].strip()) for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert requires == _declared()[""]
