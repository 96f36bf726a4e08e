"""Command line: ``specvlm generate``, ``specvlm demo``, ``specvlm bench`` and ``specvlm memory``.

Errors: any bad input (a malformed flag, a value the library refuses, text that is not valid UTF-8, an
output path that cannot be written) ends with exit status 2 and one ``specvlm: error:`` line on stderr,
before any model loads wherever that can be known; Ctrl-C ends with exit status 130 and one line. Model
names: a path, a hub id, ``zoo:<name>`` or ``tiny:<family>[:seed][:layers]``, resolved by
``specvlm_eval.models.resolve_ref`` exactly as in eval configs and the lmms-eval plugin.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

from specvlm import __version__
from specvlm import config as settings
from specvlm.config import METHODS
from specvlm.decoding import trees

DTYPES = ("auto", "float32", "float16", "bfloat16")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The decoding settings `specvlm bench` takes (it runs every method itself).
BENCH_SETTINGS = ("drop_rate", "num_draft_tokens", "attn_backend", "compile")
#: The decoding settings `specvlm memory` reads (the draft's share of the video, the verification tree's size).
MEMORY_SETTINGS = ("drop_rate", "num_draft_tokens", "tree", "tree_total_tokens")


def _setting_type(name: str):
    def parse(text: str):
        try:
            value = settings.parse(name, text)
            if name == "tree":
                trees.resolve(value, 1)  # a malformed tree is reported against --tree, before anything loads
            return value
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def add_setting_arguments(parser, names=settings.NAMES) -> None:
    """One ``--flag`` per decoding setting in ``names``, with its help, type and choices from
    :class:`specvlm.config.DecodingConfig`. Unset flags stay ``None`` (the config's default applies)."""
    group = parser.add_argument_group("decoding settings")
    for f in settings.SETTINGS:
        if f.name not in names:
            continue
        choices = settings.allowed(f.name)
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=_setting_type(f.name),
            default=None,
            choices=choices if f.name != "tree" else None,
            metavar=None if choices else type(f.default).__name__.upper() if f.name != "tree" else "TREE",
            help=f"{f.metadata['help']} (default: {f.default})",
        )


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, refused with a message naming the value otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (give an integer >= {minimum})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


_non_negative_int = _int_at_least(0)
_positive_int = _int_at_least(1)


def _positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (give a number > 0)") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} must be a number > 0")
    return value


_positive_number.__name__ = "number > 0"


def _device_map(text: str):
    """``--device-map`` text: a GPU index ("0") becomes an int, anything else stays text."""
    return int(text) if text.isdigit() else text


def _add_json_argument(parser, what: str) -> None:
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                        help=f"{what} as JSON: without FILE on stdout (instead of the text), with FILE written "
                             "to FILE (the text still goes to stdout)")  # fmt: skip


def check_output_file(dest, flag: str = "--json") -> None:
    """Raise ValueError naming ``flag`` and the path, before any work, when the file ``dest`` cannot be
    written: an empty name, a directory, a missing parent directory, a parent that is a file, or no
    permission. The check opens the file for appending (an existing file is left as it is; a file it
    had to create is removed again), so it holds for every user, root included."""
    if dest is None or dest == "-":
        return
    if not str(dest).strip():
        raise ValueError(f"{flag} {dest!r} is an empty path; give a file path (or {flag} alone for stdout)")
    path = os.path.abspath(dest)
    if os.path.isdir(path):
        raise ValueError(f"{flag} {dest!r} is a directory; give a file path (or {flag} alone for stdout)")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        what = "is a file, not a directory" if os.path.exists(parent) else "does not exist"
        raise ValueError(f"{flag} {dest!r} cannot be written: the directory {parent!r} {what}")
    existed = os.path.exists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {dest!r} cannot be written: {err.strerror or err}") from None
    if not existed:
        os.remove(path)


def _check_json_file(dest) -> None:
    """Raise ValueError before any work when ``--json FILE`` cannot be written."""
    check_output_file(dest, "--json")


def _write_json(data, dest: str, what: str) -> None:
    """``data`` as JSON on stdout (``dest`` "-") or in the file ``dest`` (said on stderr)."""
    text = json.dumps(data, indent=2)
    if dest == "-":
        sys.stdout.write(text + "\n")
        return
    try:
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as err:  # checked before the work, but a disk can fill up meanwhile
        raise ValueError(f"--json {dest!r} could not be written: {err.strerror or err}") from None
    sys.stderr.write(f"specvlm: wrote {what} as JSON to {dest}\n")


def _not_utf8(value: str) -> str | None:
    """Where ``value`` (a command-line string) holds bytes that are not valid UTF-8, a description
    of them; None when it is valid text. Python keeps such bytes as lone surrogates."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as err:
        raw = os.fsencode(value)
        offset = len(value[: err.start].encode("utf-8", "surrogateescape"))
        return f"byte {raw[offset:offset + 1]!r} at byte offset {offset} is not valid UTF-8"


def check_text_arguments(args, flags: dict[str, str]) -> None:
    """Raise ValueError for a text argument (``flags``: attribute -> flag) holding bytes that are not
    valid UTF-8 (the tokenizer and the JSON output take text only). File paths are not checked here:
    a file name may be any bytes."""
    for attr, flag in flags.items():
        values = getattr(args, attr, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and (problem := _not_utf8(value)) is not None:
                raise ValueError(f"{flag} holds text that is not UTF-8 ({problem}); pass it in UTF-8")


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error: ``prog: error: message (see prog -h)`` and exit status 2."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def chosen_settings(args, names=settings.NAMES) -> dict:
    """The decoding settings given on the command line (unset ones are left to the config's defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="specvlm", description="Lossless speculative decoding for video LLMs.")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="logging level (default: WARNING)")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"specvlm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to run")

    gen = sub.add_parser("generate", help="answer a prompt about a video and / or images")
    gen.add_argument("--target", required=True,
                     help="target checkpoint: a path, a hub id, zoo:<name> (the embedded pair: zoo:target) or "
                          "tiny:<family>[:seed][:layers] (a tiny random model, built offline)")  # fmt: skip
    gen.add_argument("--draft", default=None, help="draft checkpoint (same forms as --target); omit for self-drafting")
    gen.add_argument("--video", default=None, help="video file (a --video, an --image or both)")
    gen.add_argument("--image", action="append", default=None, metavar="FILE",
                     help="an image file, before the video in the prompt; repeat for several images")  # fmt: skip
    gen.add_argument("--prompt", required=True, help="the question or instruction about the video")
    gen.add_argument("--system", default=None, help="a system turn before the question (the chat template's format)")
    gen.add_argument("--method", choices=METHODS, default="specvlm",
                     help="specvlm: pruned draft; sd: the draft sees every video token; ar: plain decoding")  # fmt: skip
    gen.add_argument("--do-sample", action="store_true",
                     help="lossless speculative sampling (default: the checkpoint's generation config decides)")
    gen.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the checkpoint's)")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: the checkpoint's)")
    gen.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (default: the checkpoint's)")
    gen.add_argument("--num-frames", type=int, default=None,
                     help="frames sampled uniformly from the video (default: 8, unless --fps is given)")
    gen.add_argument("--fps", type=float, default=None, help="sample frames at this rate instead of a fixed count")
    gen.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                     help="at most N frames: when --fps would sample more, N frames spread uniformly over the "
                          "video instead (default: no cap)")  # fmt: skip
    gen.add_argument("--ignore-eos", action="store_true", help="decode exactly --max-new-tokens tokens")
    gen.add_argument("--stream", action="store_true", help="print the answer as its tokens are committed")
    gen.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate (default: 256)")
    gen.add_argument("--dtype", default=None, choices=DTYPES, help="torch dtype (default: the checkpoint's)")
    gen.add_argument("--tp", type=_positive_int, default=None, metavar="N",
                     help="shard the target over N processes (tensor parallelism; run under torchrun --nproc_per_node N)")
    gen.add_argument("--device-map", default=None, type=_device_map,
                     help='where the models go: "cpu", "auto", "cuda", "cuda:N" or a GPU index N (default: CPU)')
    _add_json_argument(gen, "the answer, its token ids and its statistics")
    add_setting_arguments(gen)

    demo = sub.add_parser("demo", help="run plain decoding and SpecVLM on tiny offline models and a synthetic video")
    demo.add_argument("--max-new-tokens", type=_positive_int, default=160, help="tokens per answer (default: 160)")
    demo.add_argument("--num-frames", type=_positive_int, default=32, help="frames of the synthetic video (default: 32)")
    _add_json_argument(demo, "the answers, their token ids and statistics per method")

    bench = sub.add_parser(
        "bench", help="measure decode speed of ar, sd, specvlm (chain, tree, eager, unguarded), prompt lookup, the "
        "self-draft and hf-assisted, end to end and to the first token too, on a caption and on short answers, "
        "on a quiet or a busy machine")  # fmt: skip
    bench.add_argument("--target", default=None, help="target checkpoint (default: the embedded trained pair)")
    bench.add_argument("--draft", default=None, help="draft checkpoint (default: the embedded trained pair)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cpu: the pair on this machine; cuda: real-shape random-weight models on the GPU")
    bench.add_argument("--max-new-tokens", type=_positive_int, default=128, help="tokens per run, EOS ignored (default: 128)")
    bench.add_argument("--min-video-tokens", type=_positive_int, default=1024,
                       help="video tokens of the bench video (default: 1024)")
    bench.add_argument("--repeats", type=_positive_int, default=3,
                       help="timed runs per method after one warm-up (fastest counts; default: 3)")
    bench.add_argument("--no-hf-assisted", action="store_true", help="skip transformers' assisted generation")
    bench.add_argument("--workloads", type=_workloads, default="caption,self-draft,answers",
                       help="comma-separated: caption (every method on one long answer), self-draft (the target "
                            "drafting for itself on it), answers (short multiple-choice answers, EOS on); "
                            "default: all three")
    bench.add_argument("--contention", type=_non_negative_int, default=0,
                       help="CPU-bound processes to run beside every timed run: the ratios of a busy machine "
                            "(e.g. 10 on 2 cores: five per core; default: 0)")
    bench.add_argument("--profile", action="store_true",
                       help="also break a plain step, a chain verification and a draft step down by operator (torch.profiler)")
    bench.add_argument("--target-shape", default="qwen2-7b", help="cuda mode: target text-decoder shape, e.g. qwen2-7b, qwen3-8b, qwen3-32b (default: qwen2-7b)")
    bench.add_argument("--draft-shape", default="qwen2-0.5b", help="cuda mode: draft text-decoder shape, e.g. qwen2-0.5b, qwen3-2b, qwen3-0.6b (default: qwen2-0.5b)")
    bench.add_argument("--context", type=_positive_int, default=16384, help="cuda mode: target context tokens (default: 16384)")
    bench.add_argument("--keep", type=float, default=0.1,
                       help="cuda mode: share of the context the draft keeps, in (0, 1] (default: 0.1)")
    bench.add_argument("--tau", type=float, default=4.0,
                       help="cuda mode: tokens per step to project the speedup from, >= 1 (default: 4.0)")
    bench.add_argument("--dtype", default="bfloat16", choices=DTYPES[1:], help="cuda mode: torch dtype (default: bfloat16)")
    _add_json_argument(bench, "the figures")
    add_setting_arguments(bench, BENCH_SETTINGS)

    mem = sub.add_parser(
        "memory", help="estimate the GPU memory of a pair at a number of frames and the GPUs it needs, from the "
        "models' configs alone (nothing is downloaded or loaded)")  # fmt: skip
    mem.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                     help="an experiment file or a packaged config's name (e.g. llava_ov_72b_7b): its pair, dtype, "
                          "max_new_tokens and its specvlm methods' drop_rate and tree; or give --target")  # fmt: skip
    mem.add_argument("--target", default=None,
                     help="target instead of the config's: a checkpoint directory (its config.json is read), a hub id "
                          "whose shapes are known offline, zoo:<name> or tiny:<family>[:seed][:layers]")  # fmt: skip
    mem.add_argument("--draft", default=None, help="draft instead of the config's (same forms); without a config and "
                     "without --draft the target drafts for itself")  # fmt: skip
    mem.add_argument("--frames", type=_positive_int, required=True, metavar="N", help="frames of the video")
    mem.add_argument("--dtype", default=None, choices=DTYPES[1:],
                     help="dtype of the weights and activations (default: the config's torch_dtype, else bfloat16)")
    mem.add_argument("--gpu-memory", type=_positive_number, default=None, metavar="GIB",
                     help="memory of one GPU in GiB (default: 80); 10%% of it is kept free")
    mem.add_argument("--text-tokens", type=_non_negative_int, default=None, metavar="N",
                     help="text tokens around the video: template, system turn, question (default: 256)")
    mem.add_argument("--max-new-tokens", type=_positive_int, default=None, metavar="N",
                     help="most tokens to generate (default: the config's, else 256)")
    mem.add_argument("--frame-tokens", type=_positive_int, default=None, metavar="N",
                     help="video tokens per frame (Qwen2.5-VL: per 2-frame patch) instead of the family's "
                          "(LLaVA-OneVision: fixed by its vision config; Qwen2.5-VL: the stock video processor's "
                          "most, 768 per patch; a smaller video gives fewer)")  # fmt: skip
    _add_json_argument(mem, "the estimate (in bytes)")
    add_setting_arguments(mem, MEMORY_SETTINGS)
    return parser


#: Where ``tiny:`` model names are built (the lmms-eval plugin's default too).
TINY_CACHE = os.path.join("~", ".cache", "specvlm", "tiny")


def resolve_model(ref: str | None, flag: str) -> str | None:
    """A loadable path or hub id for a model name given on the command line: a path, a hub id,
    ``zoo:<name>`` or ``tiny:<family>[:seed][:layers]`` (``specvlm_eval.models.resolve_ref``, the resolver of
    eval configs and the lmms-eval plugin too); a bad name raises ValueError naming ``flag``."""
    if ref is None:
        return None
    if not ref.strip():
        raise ValueError(f"{flag} is empty; give a path, a hub id, zoo:<name> or tiny:<family>[:seed][:layers]")
    from pathlib import Path

    from specvlm_eval.models import resolve_ref

    try:
        path = resolve_ref(ref, Path(os.path.expanduser(TINY_CACHE)))
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None
    if (problem := _not_utf8(path)) is not None:  # the safetensors library opens UTF-8 paths only
        raise ValueError(f"{flag} {path!r}: the path is not valid UTF-8 ({problem}), and safetensors cannot open "
                         "such a path; rename the checkpoint directory")  # fmt: skip
    return path


def _generate(args) -> int:
    import torch

    if args.video is None and not args.image:
        raise ValueError("pass --video, --image (repeatable) or both")
    if args.stream and args.json == "-":
        raise ValueError("--stream prints the answer on stdout, so --json cannot too; give --json a FILE")
    check_text_arguments(args, {"prompt": "--prompt", "system": "--system"})
    _check_json_file(args.json)
    target, draft = resolve_model(args.target, "--target"), resolve_model(args.draft, "--draft")
    from specvlm.engine import SpecVLM

    dtype = getattr(torch, args.dtype) if args.dtype not in (None, "auto") else args.dtype
    engine = SpecVLM.from_pretrained(
        target, draft=draft, dtype=dtype, device_map=args.device_map, tp_size=args.tp, **chosen_settings(args)
    )
    # under torchrun every rank decodes the same answer; rank 0 alone reports it
    reports = os.environ.get("RANK", "0") == "0"
    streamer = None
    if args.stream and reports:
        from transformers import TextStreamer

        streamer = TextStreamer(engine.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    question = {"prompt": args.prompt}
    if args.system is not None:
        media = [{"type": "image", "image": image} for image in args.image or []]
        media += [{"type": "video", "video": args.video}] if args.video is not None else []
        user = [*media, {"type": "text", "text": args.prompt}]
        question = {"messages": [{"role": "system", "content": [{"type": "text", "text": args.system}]},
                                 {"role": "user", "content": user}]}  # fmt: skip
    result = engine.generate(
        video=None if args.system is not None else args.video,
        images=None if args.system is not None else args.image,
        **question,
        max_new_tokens=args.max_new_tokens,
        num_frames=args.num_frames,
        fps=args.fps,
        max_frames=args.max_frames,
        method=args.method,
        ignore_eos=args.ignore_eos,
        streamer=streamer,
        **({"do_sample": True} if args.do_sample else {}),
        **{k: v for k, v in sampling.items() if v is not None},
    )
    if not reports:
        return 0
    if args.stream:
        sys.stdout.write("\n" + result.stats.summary() + "\n")
    elif args.json != "-":
        sys.stdout.write(result.text + "\n\n" + result.stats.summary() + "\n")
    if args.json:
        payload = {"text": result.text, "token_ids": result.token_ids, "stats": result.stats.to_dict()}
        _write_json(payload, args.json, "the result")
    return 0


def _finite(x):
    return x if isinstance(x, float) and math.isfinite(x) else None


def _demo_figures(report) -> dict:
    """The demo's report as plain data for ``--json``."""
    methods = {
        name: {
            "text": r.text,
            "token_ids": r.token_ids,
            "stats": r.stats.to_dict(),
            "decode_s_runs": report.decode_s.get(name, []),
            "decode_speedup_over_ar": _finite(report.speedup(name)),
        }
        for name, r in report.results.items()
    }
    return {"model": report.model, "prompt": report.prompt, "identical": report.identical,
            "warmed_up": report.warmed_up, "timed_runs": report.timed_runs, "methods": methods}  # fmt: skip


def _demo(args) -> int:
    from transformers.utils import logging as hf_logging

    from specvlm.zoo.demo import run_demo

    _check_json_file(args.json)
    hf_logging.disable_progress_bar()
    report = run_demo(num_frames=args.num_frames, max_new_tokens=args.max_new_tokens)
    if args.json != "-":
        sys.stdout.write("\n".join(report.lines()) + "\n")
    if args.json:
        _write_json(_demo_figures(report), args.json, "the demo's results")
    return 0 if report.identical else 1


def _workloads(text) -> tuple[str, ...]:
    """``--workloads``: comma-separated names of ``specvlm_eval.bench.WORKLOADS`` (kept here to load nothing heavy)."""
    if isinstance(text, tuple):
        return text
    known = ("caption", "self-draft", "answers")
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {', '.join(known)}, comma-separated")
    return names


def _bench(args) -> int:
    import torch

    from specvlm_eval import bench
    from specvlm.config import DecodingConfig

    config = DecodingConfig(**chosen_settings(args, BENCH_SETTINGS))  # validated before any model loads
    _check_json_file(args.json)
    if args.device == "cuda":
        for flag, shape in (("--target-shape", args.target_shape), ("--draft-shape", args.draft_shape)):
            if shape not in bench.REAL_SHAPES:
                known = ", ".join(sorted(bench.REAL_SHAPES))
                raise ValueError(f"{flag} {shape!r} is not a known shape; choose one of {known}")
        if not 0 < args.keep <= 1:
            raise ValueError(f"--keep {args.keep} must be in (0, 1]")
        if not (math.isfinite(args.tau) and args.tau >= 1):
            raise ValueError(f"--tau {args.tau} must be a number >= 1 (tokens committed per step, bonus included)")
        if not torch.cuda.is_available():
            raise ValueError("--device cuda needs a CUDA GPU, and torch sees none")
        figures = bench.bench_shapes(
            args.target_shape, args.draft_shape, context=args.context, keep=args.keep, tau=args.tau,
            device="cuda", dtype=getattr(torch, args.dtype), repeats=max(args.repeats, 5),
            chain_length=config.num_draft_tokens,
        )  # fmt: skip
        text = json.dumps(figures, indent=2)
    else:
        from transformers.utils import logging as hf_logging

        from specvlm import SpecVLM, zoo

        hf_logging.disable_progress_bar()
        if (args.target is None) != (args.draft is None):
            raise ValueError("pass both --target and --draft, or neither (the embedded pair)")
        target = resolve_model(args.target, "--target") or zoo.checkpoint("target")
        draft = resolve_model(args.draft, "--draft") or zoo.checkpoint("draft")
        engine = SpecVLM.from_pretrained(
            target, draft=draft, dtype=torch.float32, attn_backend=config.attn_backend, compile=config.compile,
            num_draft_tokens=config.num_draft_tokens,
        )
        report = bench.bench_pair(
            engine, max_new_tokens=args.max_new_tokens, min_video_tokens=args.min_video_tokens,
            drop_rate=config.drop_rate, repeats=args.repeats, hf_assisted=not args.no_hf_assisted, profile=args.profile,
            workloads=args.workloads, contention=args.contention,
        )  # fmt: skip
        figures = report.to_dict()
        text = bench.format_report(report)
    if args.json != "-":
        sys.stdout.write(text + "\n")
    if args.json:
        _write_json(figures, args.json, "the figures")
    return 0


def _experiment_file(name: str):
    """An experiment file from a YAML path or a bare config name, looked up as ``specvlm-eval`` does: in
    ``./configs``, then in the configs installed with ``specvlm_eval`` (``specvlm_eval.cli`` imports this module, so its
    ``config_path`` cannot be imported here)."""
    from pathlib import Path

    import specvlm_eval.config

    if not name.strip():
        raise ValueError("the config name is empty; give a YAML file or the name of a packaged config")
    path = Path(name)
    if path.is_file():
        return path
    if path.is_dir():
        raise ValueError(f"config {name!r} is a directory; give a YAML file or the name of a packaged config")
    dirs = [Path.cwd() / "configs", Path(specvlm_eval.config.__file__).resolve().parent / "configs"]
    stem = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    if "/" not in name and os.sep not in name:
        for d in dirs:
            if (d / stem).is_file():
                return d / stem
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ValueError(f"config {name!r} is neither a file nor one of the configs: {', '.join(known) or 'none found'}")


def _memory(args) -> int:
    from specvlm import memory
    from specvlm.config import DEFAULT_MAX_NEW_TOKENS, DecodingConfig

    _check_json_file(args.json)
    target, draft, dtype, max_new_tokens = args.target, args.draft, args.dtype, args.max_new_tokens
    methods = [{}]
    if args.config is not None:
        from specvlm_eval.config import load_config

        config = load_config(_experiment_file(args.config))
        target = target or config.model.target
        draft = draft if draft is not None else config.model.draft
        if dtype is None and config.model.torch_dtype in memory.DTYPE_BYTES:
            dtype = config.model.torch_dtype
        max_new_tokens = max_new_tokens or config.generation.max_new_tokens
        methods = [spec.options for spec in config.method_specs() if spec.name == "specvlm"] or methods
    elif target is None:
        raise ValueError("give a CONFIG (e.g. llava_ov_72b_7b) or --target (and --draft)")
    # the method that needs the most: the largest share of the video in the draft, the largest tree
    decoding = [DecodingConfig(**{**options, **chosen_settings(args, MEMORY_SETTINGS)}) for options in methods]
    estimate = memory.estimate(
        resolve_model(target, "--target"),
        resolve_model(draft, "--draft"),
        frames=args.frames,
        dtype=dtype or "bfloat16",
        text_tokens=memory.DEFAULT_TEXT_TOKENS if args.text_tokens is None else args.text_tokens,
        max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        drop_rate=min(c.drop_rate for c in decoding),
        tree_nodes=max(memory.verified_nodes(c) for c in decoding),
        frame_tokens=args.frame_tokens,
        gpu_memory_gib=args.gpu_memory or memory.DEFAULT_GPU_MEMORY_GIB,
    )
    if args.json != "-":
        sys.stdout.write("\n".join(estimate.lines()) + "\n")
    if args.json:
        _write_json(estimate.to_dict(), args.json, "the estimate")
    return 0


def one_line(err: BaseException) -> str:
    """An exception's message on one line (whatever the library wrote), its type when it has none."""
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 0 (1 when the demo's token ids differ), 2 for bad input, 130 for Ctrl-C."""
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:
        sys.stderr.write("specvlm: interrupted\n")
        return 130
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    commands = {"generate": _generate, "demo": _demo, "bench": _bench, "memory": _memory}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT
        sys.stderr.write(f"specvlm: interrupted (Ctrl-C); {args.command} stopped\n")
        return 130
    except (ValueError, OSError) as err:  # bad input: say what and exit non-zero, without a traceback
        sys.stderr.write(f"specvlm: error: {one_line(err)}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
