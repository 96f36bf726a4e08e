"""Command line: ``specvlm generate`` and ``specvlm demo``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from specvlm.engine import METHODS


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
    gen.add_argument("--num-draft-tokens", type=int, default=5)
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
    gen.add_argument("--json", action="store_true", help="print the result as JSON")

    demo = sub.add_parser("demo", help="run plain decoding and SpecVLM on tiny offline models and a synthetic video")
    demo.add_argument("--max-new-tokens", type=int, default=160)
    demo.add_argument("--num-frames", type=int, default=32)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return _generate(args) if args.command == "generate" else _demo(args)
    except ValueError as err:  # bad input: say what and exit non-zero, without a traceback
        sys.stderr.write(f"specvlm: error: {err}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
