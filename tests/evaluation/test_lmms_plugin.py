"""SpecVLM inside lmms-eval (eval/lmms.py), offline: a local Video-MME-style task over generated videos
run through lmms-eval's own command line (in-process), the refusals (batch size > 1, image tasks,
sampling), and the lmms-eval answer-extraction mode against lmms-eval's own task code.

Needs lmms-eval, which lives in an environment of its own (it pins PyAV < 16):
``python -m venv .venv-lmms && .venv-lmms/bin/pip install -e ".[lmms]" pytest`` (.ci/run does this).
Skipped where lmms_eval cannot be imported.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

lmms_eval = pytest.importorskip(
    "lmms_eval", reason="lmms-eval is not installed here; it needs its own environment: pip install -e '.[lmms]' (see .ci/run)"
)

from specvlm.answers import lmms_eval_choice  # noqa: E402
from specvlm.video import write_video  # noqa: E402
from specvlm.zoo.demo import synthetic_frames  # noqa: E402
from test_answers_lmms import CASES  # noqa: E402

TASKS = Path(lmms_eval.__file__).resolve().parent / "tasks"
MODEL_ARGS = "pretrained=zoo:target,draft=zoo:draft,method=specvlm,drop_rate=0.9,baseline=ar,num_frames=8,torch_dtype=float32"
ROWS = [  # Video-MME's columns (lmms-lab/Video-MME, test split)
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History", "url": "",
     "videoID": "clip_a", "question_id": "001-1", "task_type": "Counting Problem",
     "question": "How many squares are in the video?", "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."],
     "answer": "A"},
    {"video_id": "002", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History", "url": "",
     "videoID": "clip_b", "question_id": "002-1", "task_type": "Object Recognition",
     "question": "What colour is the moving object?", "options": ["A. Red.", "B. Green.", "C. Blue.", "D. White."],
     "answer": "C"},
    {"video_id": "003", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History", "url": "",
     "videoID": "clip_c", "question_id": "003-1", "task_type": "Temporal Perception",
     "question": "Where does the object end up?", "options": ["A. Left.", "B. Right.", "C. Top.", "D. Bottom."],
     "answer": "B"},
]  # fmt: skip


@pytest.fixture
def local_videomme(tmp_path, monkeypatch):
    """A 3-row Video-MME task read from a local parquet, videos under $HF_HOME/videomme/data (no hub)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    hf_home = tmp_path / "hf"
    (hf_home / "videomme" / "data").mkdir(parents=True)
    for i, row in enumerate(ROWS):
        write_video(hf_home / "videomme" / "data" / f"{row['videoID']}.mp4", synthetic_frames(16, 64, 64, seed=i), fps=8.0)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS), tasks / "videomme_local.parquet")
    (tasks / "videomme_local.yaml").write_text(
        f"include: {TASKS / 'videomme' / 'videomme.yaml'}\n"  # the published task: prompt, generation, scoring
        "task: videomme_local\n"
        "dataset_path: parquet\n"
        "dataset_kwargs:\n"
        "  data_files: {test: videomme_local.parquet}\n"
        "  cache_dir: videomme\n"
        "  video: true\n"
    )
    for name, value in {"HF_HOME": hf_home, "HF_DATASETS_CACHE": tmp_path / "datasets", "HF_HUB_OFFLINE": 1,
                        "HF_DATASETS_OFFLINE": 1, "TRANSFORMERS_OFFLINE": 1, "WANDB_MODE": "disabled"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    return tasks


def test_entry_point_registers_the_model():
    from lmms_eval.models import get_model, list_available_models

    assert "specvlm" in list_available_models()
    assert get_model("specvlm").__module__ == "specvlm_eval.lmms"


def test_entry_point_beside_user_folders(tmp_path):
    """From a working directory holding its own ``eval/`` and ``pruning/`` packages (first on sys.path, as under
    ``python -m lmms_eval``), lmms-eval still finds the plugin: it is ``specvlm_eval.lmms``, a name such folders
    do not shadow (tests/project/test_installed_names.py does the same for the library and specvlm-eval)."""
    import os
    import subprocess

    for name in ("eval", "pruning"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} package')\n")
    code = ("import sys\n"
            "from lmms_eval.models import get_model\n"
            "cls = get_model('specvlm')\n"
            "assert cls.__module__ == 'specvlm_eval.lmms' and 'eval' not in sys.modules and 'pruning' not in sys.modules\n"
            "print(cls.__module__, cls.__name__)\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["specvlm_eval.lmms", "SpecVLMModel"]


def test_videomme_through_the_lmms_eval_command_line(local_videomme, tmp_path, monkeypatch, capsys):
    from lmms_eval.cli.dispatch import main

    out = tmp_path / "out"
    argv = ["lmms-eval", "--model", "specvlm", "--model_args", MODEL_ARGS, "--tasks", "videomme_local",
            "--include_path", str(local_videomme), "--output_path", str(out), "--log_samples", "--verbosity", "DEBUG"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    main()  # lmms-eval's own entry point (DEBUG: an exception inside the evaluation propagates)
    printed = capsys.readouterr().out
    assert "videomme_local" in printed and "videomme_perception_score" in printed

    [results_file] = list(out.rglob("*_results.json"))
    results = json.loads(results_file.read_text())
    score = results["results"]["videomme_local"]["videomme_perception_score,none"]
    assert 0.0 <= score <= 100.0
    t = results["throughput"]
    # every answer is the target's own (lossless), speculation's numbers reach lmms-eval's results
    assert t["avg_lossless_share"] == 1.0
    assert t["avg_tau"] >= 1.0 and t["avg_tau_minus_1"] == pytest.approx(t["avg_tau"] - 1.0)
    assert t["avg_decode_speedup"] > 0 and t["avg_e2e_speedup"] > 0
    budget = max(1, int(t["avg_visual_tokens"] * (1 - 0.9) + 1e-9))  # K = floor(N x (1 - drop_rate))
    assert t["avg_visual_tokens"] > 0 and 0 <= t["avg_kept_visual_tokens"] <= budget  # 0: no draft prefill (short answer)
    assert t["avg_failed_requests"] == 0 and t["total_gen_tokens"] > 0
    [samples_file] = list(out.rglob("*_samples_videomme_local.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 3
    for s in samples:  # the task scored each answer with its own reader; ours reads the same letter
        letter = s["videomme_perception_score"]["pred_answer"]
        assert (lmms_eval_choice(s["filtered_resps"][0], "videomme", 4) or "") == letter
    print(f"\nlmms-eval videomme_local: score {score:.1f}, throughput "
          + ", ".join(f"{k} {v:.4g}" for k, v in t.items() if isinstance(v, (int, float))))  # fmt: skip


def _instance(context, gen_kwargs, visual, task="t", doc_id=0):
    from lmms_eval.api.instance import Instance

    return Instance(request_type="generate_until", arguments=(context, gen_kwargs, lambda doc: visual, doc_id, task, "test"),
                    idx=doc_id, metadata={"task": task, "doc_id": doc_id, "repeats": 1})  # fmt: skip


@pytest.fixture(scope="module")
def model():
    from lmms_eval.models import get_model

    return get_model("specvlm").create_from_arg_string(
        "pretrained=zoo:target,draft=zoo:draft,num_frames=4,torch_dtype=float32,warmup=0",
        {"batch_size": 1, "max_batch_size": None, "device": None},
    )


def test_refusals(model, tmp_path, monkeypatch):
    from lmms_eval.models import get_model
    from PIL import Image

    from specvlm_eval.lmms import PluginError

    cls = get_model("specvlm")
    with pytest.raises(PluginError, match="batch_size=2.*--batch_size 1"):
        cls.create_from_arg_string("pretrained=zoo:target", {"batch_size": 2, "max_batch_size": None, "device": None})
    with pytest.raises(PluginError, match="unknown or inapplicable model_args key 'drop_rate' for method=ar"):
        cls.create_from_arg_string("pretrained=zoo:target,method=ar,drop_rate=0.9", {})
    with pytest.raises(PluginError, match="method='tree'.*specvlm, sd, ar"):
        cls.create_from_arg_string("pretrained=zoo:target,method=tree", {})

    video = tmp_path / "v.mp4"
    write_video(video, synthetic_frames(8, 64, 64), fps=8.0)
    model.task_dict = {"t": {"test": [{}, {}]}}
    monkeypatch.setattr(model, "_run", lambda *a, **k: pytest.fail("nothing may run before every request is checked"))
    greedy = {"max_new_tokens": 4, "temperature": 0, "do_sample": False}
    image = [Image.new("RGB", (32, 32))]
    with pytest.raises(PluginError, match="Image visuals, not a video file.*image tasks are not supported"):
        model.generate_until([_instance("Q?", greedy, [str(video)]), _instance("Q?", greedy, image, doc_id=1)])
    with pytest.raises(PluginError, match="not a video file"):
        model.generate_until([_instance("Q?", greedy, [str(tmp_path / "photo.jpg")])])
    with pytest.raises(PluginError, match="video tasks only"):
        model.generate_until([_instance("Q?", greedy, None)])
    with pytest.raises(PluginError, match="decodes greedily"):
        model.generate_until([_instance("Q?", {"max_new_tokens": 4, "temperature": 0.7}, [str(video)])])


def test_answers_stop_strings_and_bad_videos(model, tmp_path):
    from specvlm_eval.methods import run_method

    video = tmp_path / "v.mp4"
    write_video(video, synthetic_frames(8, 64, 64), fps=8.0)
    model.task_dict = {"t": {"test": [{}, {}]}}
    inputs = model.engine.build_inputs(model.engine.load(str(video), num_frames=4), "Describe the video.")
    reference = run_method(model.engine, model.spec, inputs, 12, model.devices)
    full = reference["text"]
    stop = full.strip().split()[1] if len(full.split()) > 1 else "\0"
    out = model.generate_until([
        _instance("Describe the video.", {"max_new_tokens": 12, "until": ["\n\n"]}, [str(video)]),
        _instance("Describe the video.", {"max_new_tokens": 12, "until": [stop]}, [str(video)]),
        _instance("Describe the video.", {"max_new_tokens": 12}, [str(tmp_path / "missing.mp4")], doc_id=1),
    ])  # fmt: skip
    # the same tokens as the method's own run (12, or fewer where this process's target reaches EOS first:
    # the tiny pair's EOS nearly ties another token after "a blue circle")
    assert out[0].text == full.strip() and out[0].token_counts.output_tokens == reference["new_tokens"]
    assert out[1].text == full.split(stop)[0].strip()
    assert out[2].text == "" and out[2].token_counts is None  # an unreadable video: no answer, counted
    from lmms_eval.models.model_utils.gen_metrics import get_logged_metrics_history

    assert get_logged_metrics_history()[-1]["failed_requests"] == 1


def _lmms_eval_readers():
    """lmms-eval's own readers: Video-MME's (shared with MLVU), MVBench's scorer, LongVideoBench's parser."""

    def load(name):
        spec = importlib.util.spec_from_file_location(f"lmms_tasks_{name}", TASKS / name / "utils.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    vmme, mvb, lvb = load("videomme"), load("mvbench"), load("longvideobench")
    lvb.random = SimpleNamespace(choice=lambda letters: None)  # where it would guess at random, our mode says None
    return {
        "videomme": lambda t: vmme.extract_characters_regex(t) or None,
        "mvbench": lambda t: next((g for g in "ABCDE" if mvb.mcq_acc(g, t) == 1), None),
        "longvideobench": lambda t: lvb.parse_multi_choice_response(t, ["A", "B", "C", "D", "E"], {}),
    }


def test_lmms_eval_extraction_equals_lmms_eval_task_code():
    readers = _lmms_eval_readers()
    pieces = ["A", "B", "C", "D", "E", "a", "b", "d", "e", " ", ".", ",", ":", ";", "(", ")", "[", "\"", "'", "!", "\n",
              "-", "/", "3,4", "2.5", "The answer is", "the best answer is ", "Answer:", "Best option:", "I choose",
              "option", "Based", "man", "Dog", "e.g.", "**", "答案是"]  # fmt: skip
    rng = random.Random(0)
    texts = list(CASES) + ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(3000)]
    for text in texts:
        for benchmark, theirs in readers.items():
            assert lmms_eval_choice(text, benchmark, 5) == theirs(text), (benchmark, text)
