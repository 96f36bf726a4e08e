"""Command line: ``specvlm generate``, ``specvlm demo`` and ``specvlm bench``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from specvlm.engine import COMPILE_MODES, DEFAULT_NUM_DRAFT_TOKENS, METHODS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specvlm", description="Lossless speculative decoding for video LLMs.")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="answer a prompt about a video")
    gen.add_argument("--target", required=True, help="target checkpoint (path or hub id)")
    gen.add_argument("--draft", default=None, help="draft checkpoint; omit for self-drafting")
    gen.add_argument("--video", required=True, help="video file")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--method", choices=METHODS, default="specvlm")
    gen.add_argument("--pruning", default="specvlm", help="pruning strategy (default: specvlm)")
    gen.add_argument("--drop-rate", type=float, default=0.9)
    gen.add_argument("--stage1-mass", type=float, default=0.4)
    gen.add_argument("--num-draft-tokens", type=int, default=DEFAULT_NUM_DRAFT_TOKENS,
                     help=f"chain length (default: {DEFAULT_NUM_DRAFT_TOKENS})")
    gen.add_argument("--tree", default="chain", help='"chain", "specvlm-25", "dynamic" or JSON paths like "[[0],[1],[0,0]]"')
    gen.add_argument("--tree-depth", type=int, default=5, help="dynamic tree depth")
    gen.add_argument("--tree-top-k", type=int, default=8, help="dynamic tree expansion width")
    gen.add_argument("--tree-total-tokens", type=int, default=25, help="dynamic tree size")
    gen.add_argument("--do-sample", action="store_true", help="lossless speculative sampling instead of greedy")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--num-frames", type=int, default=8)
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--dtype", default=None, help="torch dtype, e.g. bfloat16 (default: the checkpoint's)")
    gen.add_argument("--device-map", default=None, help='e.g. "auto" or "cuda:0"')
    gen.add_argument("--attn-backend", default="auto", help="auto | sdpa | cascade | flash_attn (default: auto)")
    gen.add_argument("--compile", choices=COMPILE_MODES, default="off",
                     help="torch.compile the decode steps: off, draft (the draft's) or all (default: off)")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")

    demo = sub.add_parser("demo", help="run plain decoding and SpecVLM on tiny offline models and a synthetic video")
    demo.add_argument("--max-new-tokens", type=int, default=160)
    demo.add_argument("--num-frames", type=int, default=32)

    bench = sub.add_parser("bench", help="measure decode speed of ar, sd, specvlm (chain, tree) and hf-assisted")
    bench.add_argument("--target", default=None, help="target checkpoint (default: the embedded trained pair)")
    bench.add_argument("--draft", default=None, help="draft checkpoint (default: the embedded trained pair)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cpu: the pair on this machine; cuda: real-shape random-weight models on the GPU")
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--min-video-tokens", type=int, default=1024)
    bench.add_argument("--drop-rate", type=float, default=0.9)
    bench.add_argument("--num-draft-tokens", type=int, default=DEFAULT_NUM_DRAFT_TOKENS,
                       help=f"chain length of sd, specvlm chain and hf-assisted (default: {DEFAULT_NUM_DRAFT_TOKENS})")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs per method after one warm-up (fastest counts)")
    bench.add_argument("--no-hf-assisted", action="store_true", help="skip transformers' assisted generation")
    bench.add_argument("--profile", action="store_true",
                       help="also break a plain step, a chain verification and a draft step down by operator (torch.profiler)")
    bench.add_argument("--attn-backend", default="auto", help="auto | sdpa | cascade | flash_attn (default: auto)")
    bench.add_argument("--compile", choices=COMPILE_MODES, default="off",
                       help="torch.compile the decode steps of every method: off, draft or all (default: off)")
    bench.add_argument("--target-shape", default="qwen2-7b", help="cuda mode: target shape")
    bench.add_argument("--draft-shape", default="qwen2-0.5b", help="cuda mode: draft shape")
    bench.add_argument("--context", type=int, default=16384, help="cuda mode: target context tokens")
    bench.add_argument("--keep", type=float, default=0.1, help="cuda mode: share of the context the draft keeps")
    bench.add_argument("--tau", type=float, default=4.0, help="cuda mode: tokens per step to project the speedup from")
    bench.add_argument("--dtype", default="bfloat16", help="cuda mode: torch dtype")
    bench.add_argument("--json", default=None, help="also write the figures to this file")  # fmt: skip
    return parser


def _generate(args) -> int:
    import torch

    from specvlm.engine import SpecVLM

    dtype = getattr(torch, args.dtype) if args.dtype else None
    tree = json.loads(args.tree) if args.tree.lstrip().startswith("[") else args.tree
    engine = SpecVLM.from_pretrained(
        args.target,
        draft=args.draft,
        pruning=args.pruning,
        drop_rate=args.drop_rate,
        stage1_mass=args.stage1_mass,
        num_draft_tokens=args.num_draft_tokens,
        torch_dtype=dtype,
        device_map=args.device_map,
        attn_backend=args.attn_backend,
        compile=args.compile,
        tree=tree,
        tree_depth=args.tree_depth,
        tree_top_k=args.tree_top_k,
        tree_total_tokens=args.tree_total_tokens,
        seed=args.seed,
    )
    result = engine.generate(
        video=args.video,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        num_frames=args.num_frames,
        method=args.method,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
    )
    if args.json:
        sys.stdout.write(json.dumps({"text": result.text, "token_ids": result.token_ids, "stats": result.stats.to_dict()}) + "\n")
    else:
        sys.stdout.write(result.text + "\n\n" + result.stats.summary() + "\n")
    return 0


def _demo(args) -> int:
    from transformers.utils import logging as hf_logging

    from specvlm.demo import run_demo

    hf_logging.disable_progress_bar()
    report = run_demo(num_frames=args.num_frames, max_new_tokens=args.max_new_tokens)
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0 if report.identical else 1


def _bench(args) -> int:
    import json

    import torch

    from specvlm import bench

    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda needs a CUDA GPU, and torch sees none")
        figures = bench.bench_shapes(
            args.target_shape, args.draft_shape, context=args.context, keep=args.keep, tau=args.tau,
            device="cuda", dtype=getattr(torch, args.dtype), repeats=max(args.repeats, 5),
            chain_length=args.num_draft_tokens,
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
            target, draft=draft, torch_dtype=torch.float32, attn_backend=args.attn_backend, compile=args.compile,
            num_draft_tokens=args.num_draft_tokens,
        )
        report = bench.bench_pair(
            engine, max_new_tokens=args.max_new_tokens, min_video_tokens=args.min_video_tokens,
            drop_rate=args.drop_rate, repeats=args.repeats, hf_assisted=not args.no_hf_assisted, profile=args.profile,
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
