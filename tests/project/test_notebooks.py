"""The research notebooks run top to bottom on the embedded trained pair and are committed without outputs.

Execution uses a ``python3`` kernel whose command is this interpreter (``sys.executable``), with the
repository root on ``PYTHONPATH``, so the notebooks import the same ``specvlm`` / ``pruning`` as the tests.
The checks that must hold (identical token ids, budgets, sane tau) are ``assert`` statements inside the
notebooks; a failing one is a cell error here.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from specvlm import zoo

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_quickstart", "02_pruning_visualised", "03_drop_rate_sweep")
KERNEL = "python3"
CELL_TIMEOUT_S = 600

needs_zoo = pytest.mark.skipif(
    set(zoo.available()) != set(zoo.CHECKPOINTS),
    reason="embedded checkpoints are not built (python -m specvlm.zoo.train)",
)


def _load_json(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean(name):
    nb = _load_json(name)
    assert nb["metadata"]["kernelspec"]["name"] == KERNEL
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert code, f"{name} has no code cells"
    for i, cell in enumerate(code):
        assert cell.get("outputs") == [], f"{name}: code cell {i} has committed outputs"
        assert cell.get("execution_count") is None, f"{name}: code cell {i} has an execution count"
    source = "".join("".join(cell["source"]) for cell in code)
    assert 'zoo.checkpoint("target")' in source and 'zoo.checkpoint("draft")' in source
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extra")
    nbformat.validate(nbformat.reads(json.dumps(nb), as_version=4))


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A ``python3`` kernelspec that runs this interpreter, first on JUPYTER_PATH; the repo on PYTHONPATH."""
    pytest.importorskip("ipykernel", reason="ipykernel is in the dev extra")
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", _prepend(spec_dir.parents[1], "JUPYTER_PATH"))
        mp.setenv("PYTHONPATH", _prepend(ROOT, "PYTHONPATH"))
        yield


def _prepend(path: Path, variable: str) -> str:
    return os.pathsep.join(filter(None, [str(path), os.environ.get(variable)]))


def _execute(name: str):
    """Run notebook ``name`` in a fresh kernel; (executed notebook, all text output, png count, seconds)."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extra")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extra")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # Not part of the notebook: prove the kernel is the interpreter running the tests.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print('KERNEL-PYTHON', sys.executable)"))
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell (including a failed assert)
    seconds = time.perf_counter() - start
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{name}: {out['ename']}: {out['evalue']}"
            if out["output_type"] == "stream" and out["name"] == "stdout":
                text.append(out["text"])
            elif out["output_type"] in ("display_data", "execute_result"):
                text.append(out["data"].get("text/plain", ""))
                images += "image/png" in out["data"]
    text = "".join(text)
    assert f"KERNEL-PYTHON {sys.executable}" in text
    print(f"{name}: executed in {seconds:.1f} s")
    return nb, text, images, seconds


@pytest.mark.slow  # ~65 s for all three on 2 CPU cores
@needs_zoo
def test_quickstart_notebook(kernel_env):
    _, text, images, _ = _execute("01_quickstart")
    assert "identical token ids: True" in text
    assert "tau" in text and "kept video tokens" in text and "decode speed-up over ar" in text
    assert "correct" in text and "reference-25 tree" in text
    assert images >= 1


@pytest.mark.slow  # ~65 s for all three on 2 CPU cores
@needs_zoo
def test_pruning_visualised_notebook(kernel_env):
    _, text, images, _ = _execute("02_pruning_visualised")
    for strategy in ("verifier_guided", "uniform", "random", "attention", "window"):
        assert f"{strategy} " in text and "attention mass kept" in text
    assert "grid (T, H, W) = (16, 4, 4)" in text
    assert images >= 2  # the frame grid and the per-frame plot


@pytest.mark.slow  # ~65 s for all three on 2 CPU cores
@needs_zoo
def test_drop_rate_sweep_notebook(kernel_env):
    _, text, images, _ = _execute("03_drop_rate_sweep")
    for strategy in ("verifier_guided", "uniform", "random"):
        assert f"tau {strategy}" in text and f"speed-up {strategy}" in text
    # timed in repeated, alternating rounds: every speed-up is a median with its min-max spread
    assert "median of 3 rounds [slowest-fastest round]" in text
    spreads = re.findall(r"(\d+\.\d+)x \[(\d+\.\d+)-(\d+\.\d+)\]", text)
    assert len(spreads) == 3 * 5 and all(float(lo) <= float(med) <= float(hi) for med, lo, hi in spreads)
    assert images >= 1
