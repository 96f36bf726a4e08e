"""SpecVLM as an lmms-eval model: ``lmms-eval --model specvlm --model_args pretrained=...,draft=...``.

lmms-eval (0.7.3, installed with ``pip install -e ".[lmms]"`` in an environment of its own: it pins an
older PyAV) finds this plugin through the ``lmms_eval.models`` entry point (:func:`manifest`). Its
video tasks (Video-MME, MVBench, MLVU, LongVideoBench, ...) hand each request's text and video path to
:meth:`SpecVLMModel.generate_until`; the answer is the target's own greedy answer (lossless), so the
task's accuracy is the target model's. What speculation did is reported to lmms-eval through
``log_metrics(..., additional_metrics=...)`` and lands in the results file under ``throughput`` with
lmms-eval's ``avg_`` prefix: ``avg_tau`` (mean committed tokens per target forward), ``avg_tau_minus_1``,
``avg_kept_visual_tokens`` and ``avg_visual_tokens`` (per request), ``avg_draft_kv_fraction``; with
``baseline=ar`` each request is decoded a second time with plain decoding on the same processed inputs,
adding ``avg_decode_speedup`` / ``avg_e2e_speedup`` (total over total), ``avg_decode_speedup_mean`` and
``avg_lossless_share`` (the share of answers whose token ids equal the ``ar`` baseline's). The
definitions are those of docs/evaluation.md (``specvlm_eval.metrics.summarize_method`` computes them).

``--model_args`` keys: ``pretrained`` (the target: a path, a hub id, ``zoo:<name>`` or
``tiny:<family>[:seed][:layers]``), ``draft`` (same forms; leave out for self-drafting), ``method``
(``specvlm`` | ``sd`` | ``ar``), ``baseline`` (``none`` | ``ar``), the method's decoding settings
(``drop_rate``, ``pruning``, ``stage1_mass``, ``num_draft_tokens``, ``tree``, ... as in
``specvlm.DecodingConfig``, whose old spellings such as ``pruning=specvlm`` and ``tree=specvlm-25`` are
accepted), frame sampling (``num_frames``, default 32, or ``fps`` with optional
``max_frames``), ``torch_dtype`` (default ``auto``), ``device_map``, ``attn_backend``, ``compile``,
``warmup`` (untimed runs of each method on the first request, default 1) and ``tiny_cache``.

Refusals: a setting or a request this plugin cannot serve raises :class:`PluginError` (a ``ValueError``)
naming it and what is allowed. lmms-eval's command line (0.7.3's ``cli_evaluate``) catches every
exception of a model, prints it and exits 0; so when the plugin runs inside that command line, a refusal
(and a model that cannot be loaded) raises ``SystemExit`` with one ``specvlm (lmms-eval model): error:``
line instead, and ``lmms-eval`` exits with status 1 (docs/evaluation.md: how a script checks).

What this plugin deliberately does not do: batch (batch size > 1 is refused: one video per forward),
images (an image or text-only task is refused before any generation), sampling (lmms-eval's video tasks
decode greedily; ``do_sample``/``temperature > 0`` is refused), log-likelihood requests, or run under
several processes (one process; ``device_map: auto`` spreads a large target over the visible GPUs).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from lmms_eval.api.instance import GenerationResult, TokenCounts
    from lmms_eval.api.model import lmms
except ImportError as err:  # pragma: no cover - the plugin is only loaded by lmms-eval
    raise ImportError(
        "specvlm_eval.lmms is SpecVLM's lmms-eval plugin and needs lmms-eval: pip install -e '.[lmms]' "
        "(in an environment of its own: lmms-eval pins PyAV < 16)"
    ) from err

logger = logging.getLogger(__name__)

METHODS = ("specvlm", "sd", "ar")
BASELINES = ("none", "ar")
#: The stop string lmms-eval adds to every task without ``until`` (its few-shot delimiter); video
#: backends ignore it, and so does this one (an answer may legitimately contain a blank line).
DEFAULT_DELIMITER = "\n\n"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".gif")


def manifest():
    """The ``lmms_eval.models`` entry point: registers this class as ``--model specvlm``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="specvlm", simple_class_path="specvlm_eval.lmms.SpecVLMModel")


class PluginError(ValueError):
    """A setting or a request this plugin cannot serve; the message says what and what is allowed."""


def inside_lmms_eval_cli() -> bool:
    """Whether this call comes from lmms-eval's command line (its ``cli_evaluate``, which turns every
    exception into a printed traceback and exit status 0)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "cli_evaluate" and str(frame.f_globals.get("__name__", "")).startswith("lmms_eval"):
            return True
        frame = frame.f_back
    return False


def _exit_on_refusal(*kinds: type):
    """Let exceptions of ``kinds`` through, except inside lmms-eval's command line, where they become
    ``SystemExit`` with one line (exit status 1) so that the refusal reaches the script's exit status."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except kinds as err:
                if not inside_lmms_eval_cli():
                    raise
                message = " ".join(str(err).split()) or type(err).__name__
                logger.error("refused: %s", message)
                raise SystemExit(f"specvlm (lmms-eval model): error: {message}") from None

        return wrapper

    return decorate


@dataclass
class _Job:
    index: int
    key: str  # task/split/doc_id: the sample id the metrics pair methods by
    prompt: str
    video: str
    gen_kwargs: dict


def _as_int(name: str, value, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PluginError(f"{name}={value!r} must be an integer >= {minimum}") from None
    if isinstance(value, bool) or number != float(value) or number < minimum:
        raise PluginError(f"{name}={value!r} must be an integer >= {minimum}")
    return number


def _none(value):
    return None if value in (None, "", "none", "None", "null") else value


class SpecVLMModel(lmms):
    """lmms-eval model class for SpecVLM (see the module docstring for the ``--model_args``)."""

    is_simple = True

    @_exit_on_refusal(ValueError, OSError)  # a bad setting, or a checkpoint that cannot be loaded
    def __init__(self, pretrained: str, draft: str | None = None, method: str = "specvlm", baseline: str = "none",
                 num_frames: int | None = 32, fps: float | None = None, max_frames: int | None = None,
                 torch_dtype: str | None = "auto", device_map=None, attn_backend: str = "auto", compile: str = "off",
                 warmup: int = 1, tiny_cache: str | None = None, batch_size=1, max_batch_size=None, device=None,
                 **settings) -> None:  # fmt: skip
        super().__init__()
        from specvlm_eval.config import METHOD_SETTINGS, ConfigError, MethodSpec, ModelConfig
        from specvlm_eval.models import load_engine, model_devices

        if str(batch_size).strip() not in ("1", "1.0"):
            raise PluginError(
                f"batch_size={batch_size!r}: SpecVLM decodes one video and prompt at a time; run lmms-eval with --batch_size 1"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise PluginError(
                "the specvlm lmms-eval model runs in one process (WORLD_SIZE > 1 found); "
                "use device_map=auto to spread a large target over several GPUs"
            )
        if method not in METHODS:
            raise PluginError(f"method={method!r} is not one of {', '.join(METHODS)}")
        baseline = "none" if _none(baseline) is None or baseline is False else baseline
        if baseline not in BASELINES:
            raise PluginError(f"baseline={baseline!r} is not one of {', '.join(BASELINES)}")
        allowed = METHOD_SETTINGS[method]
        unknown = [k for k in settings if k not in allowed]
        if unknown:
            known = ("pretrained", "draft", "method", "baseline", "num_frames", "fps", "max_frames", "torch_dtype",
                     "device_map", "attn_backend", "compile", "warmup", "tiny_cache") + allowed  # fmt: skip
            raise PluginError(f"unknown or inapplicable model_args key {unknown[0]!r} for method={method}; allowed: {', '.join(known)}")
        fps = _none(fps)
        self.sampling = {
            "num_frames": None if fps is not None else _as_int("num_frames", num_frames, 1),
            "fps": None if fps is None else float(fps),
            "max_frames": None if _none(max_frames) is None else _as_int("max_frames", max_frames, 1),
        }
        if self.sampling["max_frames"] is not None and fps is None:
            raise PluginError("max_frames only applies when sampling by fps (set fps=...)")
        self.warmup = _as_int("warmup", warmup, 0)
        try:
            self.spec = MethodSpec.build(method, settings)
            self.baseline = MethodSpec.build("ar", {}) if baseline == "ar" and method != "ar" else None
            config = ModelConfig(
                target=str(pretrained), draft=_none(draft), torch_dtype=_none(torch_dtype),
                device_map=_none(device_map) or _none(device), attn_backend=attn_backend, compile=compile,
                tiny_cache=tiny_cache or os.path.join(os.path.expanduser("~"), ".cache", "specvlm", "tiny"),
            )  # fmt: skip
        except ConfigError as err:
            raise PluginError(str(err)) from None
        self.engine = load_engine(config, Path.cwd())
        self.devices = model_devices(self.engine)
        self._warm = False
        tokens = [getattr(self.engine.processor, n, None) for n in ("video_token", "image_token")]
        self._placeholders = sorted({t for t in tokens + ["<image>", "<video>"] if isinstance(t, str) and t}, key=len, reverse=True)
        logger.info("specvlm lmms-eval model: %s%s on %s", self.spec.key,
                    " with an ar baseline" if self.baseline else "", ", ".join(map(str, self.devices)))  # fmt: skip

    # lmms-eval reads these
    @property
    def batch_size(self) -> int:
        return 1

    @property
    def device(self):
        return self.devices[0]

    @property
    def tokenizer(self):
        return self.engine.processor.tokenizer

    # ---- requests ------------------------------------------------------------------------------
    @_exit_on_refusal(PluginError)
    def loglikelihood(self, requests):
        raise PluginError("the specvlm lmms-eval model generates answers; log-likelihood tasks are not supported")

    @_exit_on_refusal(PluginError)
    def generate_until_multi_round(self, requests):
        raise PluginError("the specvlm lmms-eval model answers one question per video; multi-round tasks are not supported")

    def _job(self, index: int, request) -> _Job:
        """Check one request (a video task, a text prompt) before any generation."""
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if isinstance(visuals, (str, os.PathLike)) or not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        visuals = [v for v in visuals if v is not None]
        where = f"task {task!r} (doc {doc_id})"
        if not visuals:
            raise PluginError(f"{where} gives no video: the specvlm lmms-eval model runs video tasks only")
        if not all(isinstance(v, (str, os.PathLike)) for v in visuals):
            kinds = sorted({type(v).__name__ for v in visuals})
            raise PluginError(
                f"{where} gives {', '.join(kinds)} visuals, not a video file: the specvlm lmms-eval model runs video "
                "tasks only (one video per question); image tasks are not supported"
            )
        if len(visuals) != 1:
            raise PluginError(f"{where} gives {len(visuals)} visuals; the specvlm lmms-eval model takes one video per question")
        video = os.fspath(visuals[0])
        if not os.path.isdir(video) and not video.lower().endswith(VIDEO_SUFFIXES):
            raise PluginError(
                f"{where} gives {video!r}, which is not a video file ({', '.join(VIDEO_SUFFIXES)}) or a frame folder: "
                "the specvlm lmms-eval model runs video tasks only"
            )
        prompt = context
        for token in self._placeholders:
            prompt = prompt.replace(token, "")
        return _Job(index, f"{task}/{split}/{doc_id}", prompt.strip(), video, dict(gen_kwargs or {}))

    def _max_new_tokens(self, job: _Job) -> int:
        g = job.gen_kwargs
        if g.get("do_sample") or float(g.get("temperature") or 0) > 0:
            raise PluginError(
                f"{job.key}: generation_kwargs ask for sampling ({ {k: g.get(k) for k in ('do_sample', 'temperature')} }); "
                "the specvlm lmms-eval model decodes greedily, as lmms-eval's video tasks do"
            )
        if int(g.get("num_beams") or 1) > 1:
            raise PluginError(f"{job.key}: num_beams={g['num_beams']} cannot be speculated; use num_beams=1")
        return _as_int("max_new_tokens", g.get("max_new_tokens", 256), 1)

    def _inputs(self, job: _Job):
        from specvlm_eval import datasets
        from specvlm.video import load_video

        if os.path.isdir(job.video):  # a folder of frames (MVBench's episodic_reasoning clips)
            clip = datasets._frame_folder(job.video, datasets._folder_fps(job.video), None, self.sampling)
        else:
            clip = load_video(job.video, **self.sampling)
        return self.engine.build_inputs(clip, job.prompt)

    def _run(self, spec, inputs, max_new_tokens: int) -> dict:
        from specvlm_eval.methods import run_method

        return run_method(self.engine, spec, inputs, max_new_tokens, self.devices)

    def _specs(self):
        return [s for s in (self.baseline, self.spec) if s is not None]

    @_exit_on_refusal(PluginError)
    def generate_until(self, requests) -> list:
        from tqdm import tqdm

        from specvlm import VideoDecodeError

        jobs = [self._job(i, r) for i, r in enumerate(requests)]  # an image task fails here, before any work
        limits = [self._max_new_tokens(job) for job in jobs]
        rows: dict[str, list[dict]] = {"method": [], "ar": []}
        answers: list = []
        failed = 0
        for job, max_new_tokens in tqdm(list(zip(jobs, limits)), desc="SpecVLM responding", disable=self.rank != 0):
            try:
                inputs = self._inputs(job)
                if not self._warm:
                    for spec in self._specs():
                        for _ in range(self.warmup):
                            self._run(spec, inputs, max_new_tokens)
                    self._warm = True
                out = {}
                for spec in self._specs():
                    out[spec.name] = self._run(spec, inputs, max_new_tokens)
            except (VideoDecodeError, ValueError) as err:  # a bad video or request: an empty answer, counted
                logger.warning("%s: no answer (%s: %s)", job.key, type(err).__name__, err)
                failed += 1
                answers.append(GenerationResult(text="", token_counts=None))
                continue
            result = out[self.spec.name]
            for role, spec in (("method", self.spec), ("ar", self.baseline)):
                if spec is not None:
                    rows[role].append({**out[spec.name], "sample_id": job.key, "status": "ok", "method_name": spec.name,
                                       "settings": spec.options})  # fmt: skip
            text = result["text"]
            stops = job.gen_kwargs.get("until") or []
            for stop in [stops] if isinstance(stops, str) else stops:
                if stop and stop != DEFAULT_DELIMITER:
                    text = text.split(stop)[0]
            prompt_tokens = int(inputs["input_ids"].shape[-1])
            answers.append(GenerationResult(text=text.strip(), token_counts=TokenCounts(prompt_tokens, result["new_tokens"])))
        self._log(rows, len(jobs), failed)
        return answers

    def _log(self, rows: dict[str, list[dict]], requests: int, failed: int) -> dict:
        """Aggregate this call's rows as docs/evaluation.md defines the metrics and hand them to lmms-eval."""
        from lmms_eval.models.model_utils.gen_metrics import log_metrics

        from specvlm_eval.metrics import summarize_method

        done = rows["method"]
        extra: dict = {"total_requests": requests, "failed_requests": failed}
        if done:
            s = summarize_method(done, {r["sample_id"]: r for r in rows["ar"]})
            picks = {"tau": "tau", "tau_minus_1": "tau_minus_1", "kept_visual_tokens": "kept_visual_tokens_mean",
                     "visual_tokens": "visual_tokens_mean", "draft_kv_fraction": "draft_kv_fraction_mean"}  # fmt: skip
            if self.baseline is not None:
                picks.update(decode_speedup="decode_speedup_total", decode_speedup_mean="decode_speedup_mean",
                             e2e_speedup="e2e_speedup_total", lossless_share="lossless_rate")  # fmt: skip
            extra.update({name: s[key] for name, key in picks.items() if isinstance(s.get(key), (int, float))})
        elapsed = sum(r["e2e_s"] for r in done)
        tokens = sum(r["new_tokens"] for r in done)
        log_metrics(total_elapsed_time=elapsed, total_gen_tokens=tokens, avg_speed=tokens / elapsed if elapsed else 0.0,
                    additional_metrics=extra)  # fmt: skip
        return extra
