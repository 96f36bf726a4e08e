"""Command line: ``specvlm generate``, ``specvlm demo`` and ``specvlm bench``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from specvlm import __version__
from specvlm import config as settings
from specvlm.config import METHODS

DTYPES = ("auto", "float32", "float16", "bfloat16")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The decoding settings `specvlm bench` takes (it runs every method itself).
BENCH_SETTINGS = ("drop_rate", "num_draft_tokens", "attn_backend", "compile")


def _setting_type(name: str):
    def parse(text: str):
        try:
            return settings.parse(name, text)
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


def chosen_settings(args, names=settings.NAMES) -> dict:
    """The decoding settings given on the command line (unset ones are left to the config's defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specvlm", description="Lossless speculative decoding for video LLMs.")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="logging level (default: WARNING)")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"specvlm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="answer a prompt about a video")
    gen.add_argument("--target", required=True, help="target checkpoint (path or hub id)")
    gen.add_argument("--draft", default=None, help="draft checkpoint; omit for self-drafting")
    gen.add_argument("--video", required=True, help="video file")
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
    gen.add_argument("--ignore-eos", action="store_true", help="decode exactly --max-new-tokens tokens")
    gen.add_argument("--stream", action="store_true", help="print the answer as its tokens are committed")
    gen.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate (default: 256)")
    gen.add_argument("--dtype", default=None, choices=DTYPES, help="torch dtype (default: the checkpoint's)")
    gen.add_argument("--device-map", default=None, help='e.g. "auto" or "cuda:0" (default: CPU)')
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    add_setting_arguments(gen)

    demo = sub.add_parser("demo", help="run plain decoding and SpecVLM on tiny offline models and a synthetic video")
    demo.add_argument("--max-new-tokens", type=int, default=160, help="tokens per answer (default: 160)")
    demo.add_argument("--num-frames", type=int, default=32, help="frames of the synthetic video (default: 32)")

    bench = sub.add_parser("bench", help="measure decode speed of ar, sd, specvlm (chain, tree) and hf-assisted")
    bench.add_argument("--target", default=None, help="target checkpoint (default: the embedded trained pair)")
    bench.add_argument("--draft", default=None, help="draft checkpoint (default: the embedded trained pair)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cpu: the pair on this machine; cuda: real-shape random-weight models on the GPU")
    bench.add_argument("--max-new-tokens", type=int, default=128, help="tokens per run, EOS ignored (default: 128)")
    bench.add_argument("--min-video-tokens", type=int, default=1024, help="video tokens of the bench video (default: 1024)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs per method after one warm-up (fastest counts)")
    bench.add_argument("--no-hf-assisted", action="store_true", help="skip transformers' assisted generation")
    bench.add_argument("--profile", action="store_true",
                       help="also break a plain step, a chain verification and a draft step down by operator (torch.profiler)")
    bench.add_argument("--target-shape", default="qwen2-7b", help="cuda mode: target shape")
    bench.add_argument("--draft-shape", default="qwen2-0.5b", help="cuda mode: draft shape")
    bench.add_argument("--context", type=int, default=16384, help="cuda mode: target context tokens")
    bench.add_argument("--keep", type=float, default=0.1, help="cuda mode: share of the context the draft keeps")
    bench.add_argument("--tau", type=float, default=4.0, help="cuda mode: tokens per step to project the speedup from")
    bench.add_argument("--dtype", default="bfloat16", choices=DTYPES[1:], help="cuda mode: torch dtype")
    bench.add_argument("--json", default=None, help="also write the figures to this file")  # fmt: skip
    add_setting_arguments(bench, BENCH_SETTINGS)
    return parser


def _generate(args) -> int:
    import torch

    from specvlm.engine import SpecVLM

    dtype = getattr(torch, args.dtype) if args.dtype not in (None, "auto") else args.dtype
    engine = SpecVLM.from_pretrained(
        args.target, draft=args.draft, torch_dtype=dtype, device_map=args.device_map, **chosen_settings(args)
    )
    streamer = None
    if args.stream:
        from transformers import TextStreamer

        streamer = TextStreamer(engine.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    question = {"prompt": args.prompt}
    if args.system is not None:
        user = [{"type": "video", "video": args.video}, {"type": "text", "text": args.prompt}]
        question = {"messages": [{"role": "system", "content": [{"type": "text", "text": args.system}]},
                                 {"role": "user", "content": user}]}  # fmt: skip
    result = engine.generate(
        video=None if args.system is not None else args.video,
        **question,
        max_new_tokens=args.max_new_tokens,
        num_frames=args.num_frames,
        fps=args.fps,
        method=args.method,
        ignore_eos=args.ignore_eos,
        streamer=streamer,
        **({"do_sample": True} if args.do_sample else {}),
        **{k: v for k, v in sampling.items() if v is not None},
    )
    if args.stream:
        sys.stdout.write("\n" + result.stats.summary() + "\n")
    elif args.json:
        sys.stdout.write(json.dumps({"text": result.text, "token_ids": result.token_ids, "stats": result.stats.to_dict()}) + "\n")
    else:
        sys.stdout.write(result.text + "\n\n" + result.stats.summary() + "\n")
    return 0


def _demo(args) -> int:
    from transformers.utils import logging as hf_logging

    from specvlm.zoo.demo import run_demo

    hf_logging.disable_progress_bar()
    report = run_demo(num_frames=args.num_frames, max_new_tokens=args.max_new_tokens)
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0 if report.identical else 1


def _bench(args) -> int:
    import json

    import torch

    from eval import bench
    from specvlm.config import DecodingConfig

    config = DecodingConfig(**chosen_settings(args, BENCH_SETTINGS))  # validated before any model loads
    if args.device == "cuda":
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
        target = args.target or zoo.checkpoint("target")
        draft = args.draft or zoo.checkpoint("draft")
        engine = SpecVLM.from_pretrained(
            target, draft=draft, torch_dtype=torch.float32, attn_backend=config.attn_backend, compile=config.compile,
            num_draft_tokens=config.num_draft_tokens,
        )
        report = bench.bench_pair(
            engine, max_new_tokens=args.max_new_tokens, min_video_tokens=args.min_video_tokens,
            drop_rate=config.drop_rate, repeats=args.repeats, hf_assisted=not args.no_hf_assisted, profile=args.profile,
        )  # fmt: skip
        figures = report.to_dict()
        text = bench.format_report(report)
    sys.stdout.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    commands = {"generate": _generate, "demo": _demo, "bench": _bench}
    try:
        return commands[args.command](args)
    except ValueError as err:  # bad input: say what and exit non-zero, without a traceback
        sys.stderr.write(f"specvlm: error: {err}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
