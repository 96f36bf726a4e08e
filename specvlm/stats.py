"""Results and statistics of one generation: ``GenerationResult`` and ``GenerationStats``.

The metrics these fields feed (tau and tau - 1, prefill / decode / E2E time, TTFT, TPOT, draft KV
fraction, depth acceptance rate, ...) are defined once, in docs/evaluation.md ("Metric definitions");
the comments and docstrings below only summarise each field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationStats:
    """What the loop actually did for one prompt. Times are seconds."""

    method: str
    new_tokens: int = 0
    target_steps: int = 0  # target verification (or plain decode) forwards after prefill
    accepted_lengths: list[int] = field(default_factory=list)  # tokens committed by each target step
    draft_steps: int = 0  # draft forwards after prefill (one per tree level, catch-up included)
    depth_attempts: list[int] = field(default_factory=list)  # [d - 1]: steps whose accepted path reached a node with children at depth d - 1
    depth_accepts: list[int] = field(default_factory=list)  # [d - 1]: of those, steps that accepted a node at depth d
    visual_tokens: int = 0  # prunable visual tokens (of its images and videos) in the prompt (N)
    kept_visual_tokens: int = 0  # visual tokens in the draft's context (0 without a draft)
    prompt_tokens: int = 0
    target_kv_tokens: int = 0  # target cache length after prefill
    draft_kv_tokens: int = 0  # draft cache length after prefill (0 without a draft)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stopped_by: str = ""  # "eos" | "max_new_tokens"
    host_syncs: int = 0  # device-to-host reads by the decode steps (specvlm.timing.to_host)
    # "" (ar: no draft) | "on" (drafted) | "skipped" (the answer ended before a lazily started draft was
    # prefilled: no draft prefill, no draft forward) | "stopped" (a self-draft's layer trials found plain
    # decoding fastest; the rest of the answer was decoded without drafting) | "fell_back" (the never-slower
    # guard found drafting slower than plain decoding; the rest of the answer was decoded plainly) |
    # "remembered_plain" (an earlier answer of the same kind fell back: decoded plainly, no draft prefill)
    speculation: str = ""
    fell_back_at: int = 0  # committed tokens when the guard turned the answer plain (0: it never did)
    compile_s: float = 0.0  # seconds spent compiling the draft's decode steps (once per engine; in neither prefill_s nor decode_s)
    draft_start_tokens: int = 0  # tokens committed before the draft was prefilled (lazy start; 0: with the target)
    # the draft's prefill, part of prefill_s (also when started lazily, during decoding; a lazy start also
    # scores the video for pruning then, included here)
    draft_prefill_s: float = 0.0
    draft_layers: list[int] = field(default_factory=list)  # a layer-skipping self-draft's decoder layers, as kept
    overlap: bool = False  # the draft drafted in a worker of its own while the target verified (``overlap``)
    overlap_hits: int = 0  # drafted steps whose chain was drafted during the previous verification (overlap)

    def record_step(self, committed: int, accepted_depth: int, tried_depth: int) -> None:
        """Account one target verification step that committed ``committed`` tokens after accepting a
        path of ``accepted_depth`` draft nodes; ``tried_depth`` is the deepest level at which the target
        was offered a candidate on that path (``accepted_depth + 1`` if the path's end node had
        children, else ``accepted_depth``)."""
        self.target_steps += 1
        self.accepted_lengths.append(committed)
        while len(self.depth_attempts) < tried_depth:
            self.depth_attempts.append(0)
            self.depth_accepts.append(0)
        for d in range(1, tried_depth + 1):
            self.depth_attempts[d - 1] += 1
            self.depth_accepts[d - 1] += int(accepted_depth >= d)

    @property
    def accepted_length_histogram(self) -> dict[int, int]:
        """{tokens committed in a step: number of steps}."""
        hist: dict[int, int] = {}
        for n in self.accepted_lengths:
            hist[n] = hist.get(n, 0) + 1
        return dict(sorted(hist.items()))

    @property
    def depth_acceptance_rates(self) -> list[float]:
        """[d - 1]: P(a node at depth d is accepted | the accepted path reached a node with children at depth d - 1)."""
        return [a / t if t else 0.0 for a, t in zip(self.depth_accepts, self.depth_attempts)]

    @property
    def mean_accepted_tokens(self) -> float | None:
        """tau: tokens committed per target verification forward, bonus token included (ar = 1.0);
        ``None`` when no verification step ran (one new token: the prefill's)."""
        return sum(self.accepted_lengths) / len(self.accepted_lengths) if self.accepted_lengths else None

    @property
    def mean_accepted_draft_tokens(self) -> float | None:
        """tau - 1: mean accepted draft tokens per verification step (SpecVLM paper convention); ``None``
        when no verification step ran."""
        return self.mean_accepted_tokens - 1.0 if self.accepted_lengths else None

    @property
    def speculation_skipped(self) -> bool:
        """True when a drafting method never drafted because the answer was too short to pay for the
        draft's prefill (lazy start)."""
        return self.speculation == "skipped"

    @property
    def video_tokens(self) -> int:
        """The old name of :attr:`visual_tokens` (read-only)."""
        return self.visual_tokens

    @property
    def kept_video_tokens(self) -> int:
        """The old name of :attr:`kept_visual_tokens` (read-only)."""
        return self.kept_visual_tokens

    @property
    def e2e_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def ttft_s(self) -> float:
        """Time to the first new token: the prefill, less a lazily started draft's prefill, which runs
        after the first tokens are out (``draft_start_tokens`` > 0)."""
        return self.prefill_s - (self.draft_prefill_s if self.draft_start_tokens else 0.0)

    @property
    def tpot_s(self) -> float:
        """Decode seconds per token after the first (0 when only one token was generated)."""
        return self.decode_s / (self.new_tokens - 1) if self.new_tokens > 1 else 0.0

    @property
    def draft_kv_fraction(self) -> float:
        return self.draft_kv_tokens / self.target_kv_tokens if self.target_kv_tokens else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        for name in (
            "mean_accepted_tokens",
            "mean_accepted_draft_tokens",
            "e2e_s",
            "ttft_s",
            "tpot_s",
            "draft_kv_fraction",
            "accepted_length_histogram",
            "depth_acceptance_rates",
            "speculation_skipped",
        ):
            out[name] = getattr(self, name)
        return out

    def summary(self) -> str:
        return (
            f"method={self.method} new_tokens={self.new_tokens} target_steps={self.target_steps} "
            f"tau={'-' if self.mean_accepted_tokens is None else format(self.mean_accepted_tokens, '.2f')} visual_tokens={self.visual_tokens} "
            f"kept_visual_tokens={self.kept_visual_tokens} target_kv={self.target_kv_tokens} "
            f"draft_kv={self.draft_kv_tokens} prefill={self.prefill_s:.3f}s decode={self.decode_s:.3f}s"
        )


@dataclass
class GenerationResult:
    """New tokens only (the prompt is not repeated)."""

    token_ids: list[int]
    text: str
    stats: GenerationStats
