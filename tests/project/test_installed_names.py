"""A user's own ``eval/`` or ``pruning/`` folder in the working directory breaks nothing of ours.

The folders eval/ and pruning/ install as ``specvlm_eval`` and ``specvlm_pruning`` (pyproject.toml's package-dir),
names no research repository's folders take. Each command below runs in a fresh process from a directory holding
an ``eval/`` and a ``pruning/`` package of its own whose import records itself and raises, with that directory
first on sys.path the way a user meets it: ``python -c``, a script in that directory, ``python -m`` (the working
directory first on sys.path) and ``PYTHONPATH=.``, a research repository's habit, for the console script. Under the
old names (top-level ``eval`` and ``pruning``) ``import specvlm`` itself failed here. The lmms-eval plugin's check
is in tests/evaluation/test_lmms_plugin.py (it needs lmms-eval).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

SHADOW = '''import os
with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "imported.txt"), "a") as f:
    f.write(__name__ + "\\n")
raise ImportError("the user's own " + __name__ + " package was imported instead of SpecVLM's")
'''


def user_folder(root: Path) -> Path:
    """A working directory with its own ``eval`` and ``pruning`` packages (each import leaves a line in
    imported.txt and raises ImportError, so neither a failure nor a swallowed ImportError goes unnoticed)."""
    for name in ("eval", "pruning"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(SHADOW)
    return root


def run_in(cwd: Path, argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``argv`` from ``cwd`` with ``PYTHONPATH=cwd`` (so that the user's folders are first on sys.path for every
    kind of command, a console script's included), asserting that it succeeds and never imported the user's
    packages."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    marker = cwd / "imported.txt"
    assert not marker.exists(), f"{argv} imported the user's own packages: {marker.read_text().split()}"
    return proc


def test_the_user_folders_do_shadow_their_names(tmp_path):
    """The set-up bites: from that directory ``import eval`` / ``import pruning`` reach the user's packages (which
    is why ours are not installed under those names)."""
    cwd = user_folder(tmp_path)
    for name in ("eval", "pruning"):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=cwd, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and f"the user's own {name} package" in proc.stderr
    assert (cwd / "imported.txt").read_text().split() == ["eval", "pruning"]


LIBRARY = """import sys
import specvlm
from specvlm import SpecVLM
engine = SpecVLM.from_pretrained({target!r}, draft={draft!r},
                                 lazy_draft_after=0, never_slower=False, compile="off", overlap="off")
result = engine.generate(video={video!r}, prompt="Describe the video.", max_new_tokens=4, num_frames=4)
stats = result.stats
assert 0 < stats.kept_visual_tokens < stats.visual_tokens, (stats.kept_visual_tokens, stats.visual_tokens)
assert "pruning" not in sys.modules and "eval" not in sys.modules
print("kept", stats.kept_visual_tokens, "of", stats.visual_tokens, "by", sys.modules["specvlm_pruning"].__file__)
"""


def test_the_library_beside_user_folders(tmp_path, checkpoints, video_file):
    """A script in that directory (its folder first on sys.path, as for ``python -c`` and a REPL) imports specvlm and
    runs a generate() whose draft sees the pruned video: the pruning package at work."""
    cwd = user_folder(tmp_path / "work")
    pair = checkpoints["llava_onevision"]
    (cwd / "script.py").write_text(LIBRARY.format(target=str(pair["target"]), draft=str(pair["draft"]), video=video_file))
    proc = run_in(cwd, [sys.executable, "script.py"])
    assert proc.stdout.startswith("kept") and str(cwd) not in proc.stdout


@pytest.mark.slow
def test_python_c_beside_user_folders(tmp_path):
    cwd = user_folder(tmp_path / "work")
    code = "import specvlm, specvlm_pruning; from specvlm import SpecVLM; print(specvlm_pruning.budget(100, 0.9))"
    assert run_in(cwd, [sys.executable, "-c", code]).stdout.split() == ["10"]


def _console_script() -> Path:
    script = BIN / "specvlm-eval"
    if not script.exists():
        pytest.skip(f"no specvlm-eval console script next to {sys.executable} (the project is not installed here)")
    return script


def test_the_eval_command_beside_user_folders(tmp_path):
    """``specvlm-eval tiny --limit 1``, the packaged tiny config end to end (the harness, the library and the
    pruning package), from that directory."""
    cwd, script = user_folder(tmp_path / "work"), _console_script()
    run_in(cwd, [str(script), "tiny", "--limit", "1", "--no-progress", "--no-plots", "--output", str(tmp_path / "run")])
    assert (tmp_path / "run" / "results.jsonl").read_text().strip()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["console script", "python -m specvlm_eval"])
def test_eval_help_beside_user_folders(tmp_path, how):
    cwd, script = user_folder(tmp_path / "work"), _console_script()
    argv = [str(script)] if how == "console script" else [sys.executable, "-m", "specvlm_eval"]
    assert "usage: specvlm-eval" in run_in(cwd, [*argv, "--help"]).stdout
