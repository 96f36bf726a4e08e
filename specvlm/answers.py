"""Reading a multiple-choice answer out of free text: which option letter a model's answer picks.

Used by the evaluation CLI's accuracy metric and by the embedded pair's own evaluation; useful to any
caller of the API that asks a video multiple-choice question.

Two extraction modes (:data:`EXTRACTION_MODES`, :func:`extract_answer`): ``strict`` (:func:`extract_choice`:
it would rather say "no answer" than guess; its old spelling ``specvlm`` is still accepted, see
:func:`canonical_mode`) and ``lmms-eval`` (:func:`lmms_eval_choice`: what
lmms-eval 0.7.3's Video-MME, MLVU, MVBench and LongVideoBench tasks read out of the same text, so that
accuracies can be compared with numbers published from lmms-eval). Both are our own code; the
lmms-eval mode follows the behaviour of lmms-eval's task code, quirks included (see
docs/evaluation.md, "Answer extraction").

What this module deliberately does not do: score against gold answers or aggregate.
"""

from __future__ import annotations

import re


def extract_choice(text: str, num_options: int, options: tuple[str, ...] = ()) -> str | None:
    """The option letter a free-text answer picks, or ``None``.

    Tried in order: a letter at the start (``"B"``, ``"(B)"``, ``"B."``, ``"B: text"``, ``"**B**"``);
    after "answer"/"option"/"choice" (``"The answer is (C)"``); in parentheses anywhere; a lone
    capital letter if exactly one distinct valid letter appears (the article "A" before a lower-case
    word does not count); the text of exactly one option.
    """
    if not isinstance(text, str) or num_options < 1:
        return None
    letters = "ABCDEFGHIJ"[:num_options]
    t = text.strip().replace("*", "")
    cls = f"[{letters}]"
    m = re.match(rf"^[\s\"'`\[]*\(?({cls})\)?(?=\s*(?:$|[.:,;)\]\n]))", t)
    if m:
        return m.group(1)
    m = re.search(rf"\b(?i:answer|option|choice)\b(?:\s+(?i:is|would be|should be))?\s*[:\-]?\s*\(?({cls})\)?(?![A-Za-z])", t)
    if m:
        return m.group(1)
    found = re.findall(rf"\(({cls})\)", t)
    if len(set(found)) == 1:
        return found[0]
    lone = [m.group(1) for m in re.finditer(rf"(?<![A-Za-z'])({cls})(?![A-Za-z'])", t)
            if not (m.group(1) == "A" and re.match(r"\s+[a-z]", t[m.end():]))]  # fmt: skip
    if len(set(lone)) == 1:
        return lone[0]
    low = t.lower()
    hits = [letters[i] for i, o in enumerate(options[:num_options]) if o and str(o).strip().lower() in low]
    if len(hits) == 1:
        return hits[0]
    return None


# --------------------------------------------------------------------------- lmms-eval compatible extraction

#: ``answer_extraction`` modes: ours (strict), and the one lmms-eval's video tasks use.
EXTRACTION_MODES = ("strict", "lmms-eval")
#: Old spellings of the modes that are still accepted: {old: mode}.
EXTRACTION_ALIASES = {"specvlm": "strict"}


def canonical_mode(mode):
    """An ``answer_extraction`` mode under its current name: an old spelling (:data:`EXTRACTION_ALIASES`)
    gives the mode it stands for; anything else is returned unchanged."""
    return EXTRACTION_ALIASES.get(mode, mode) if isinstance(mode, str) else mode

#: Benchmarks whose lmms-eval task reads the letter its own way (the rest use the shared ranked reader).
LMMS_EVAL_READERS = ("videomme", "mlvu", "mvbench", "longvideobench")

# The ranked reader (lmms-eval's shared multiple-choice extractor, used by its Video-MME and MLVU tasks):
# each way a letter can appear has a rank; the highest rank wins, the later position breaks ties.
_RANK_START, _RANK_END, _RANK_PHRASE, _RANK_PAREN, _RANK_PERIOD, _RANK_COLON, _RANK_CLOSE, _RANK_SPACE = 10, 9, 7, 6, 5, 4, 3, 2
_RANK_ANYWHERE = 0
# Phrases after which the first letter counts (lower-case match; the letter itself is case-sensitive).
_LEAD_INS = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)  # fmt: skip
# Trimmed from both ends, one character kind after the other, in this order.
_TRIM_ORDER = ",.!?;:'\""
# LongVideoBench: phrases deleted (case-sensitive) before the first capital A-E is taken.
_LVB_PREFIXES = (
    "The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
    "The correct option is", "Best answer:", "Best option:",
)  # fmt: skip
# MVBench normalisation: punctuation removed when it touches a space (or when the text has a digit,digit
# group), else turned into a space; then periods not followed by a digit are deleted (the first 32 only).
_MVB_PUNCT = set(';/[]"{}()=+\\_-><@`,?!')


def _ranked_letter(text: str, letters: str) -> str | None:
    """The letter lmms-eval's shared extractor picks (Video-MME, MLVU), or ``None`` where it gives ``""``."""
    if not isinstance(text, str) or not text.strip():
        return None
    t = text.strip()
    for ch in _TRIM_ORDER:
        t = t.strip(ch)
    padded = f" {t} "
    core = padded.strip()
    best: tuple[int, int, str] | None = None  # (rank, position, letter)

    def offer(rank: int, pos: int, letter: str) -> None:
        nonlocal best
        if best is None or (rank, pos) > best[:2]:
            best = (rank, pos, letter)

    for letter in letters:
        for rank, form in ((_RANK_PAREN, f"({letter})"), (_RANK_PERIOD, f"{letter}."), (_RANK_COLON, f"{letter}:"),
                           (_RANK_CLOSE, f"{letter})"), (_RANK_SPACE, f"{letter} ")):  # fmt: skip
            pos = padded.rfind(form)
            if pos >= 0:
                offer(rank, pos, letter)
    low = padded.lower()
    for phrase in _LEAD_INS:
        at = low.find(phrase)
        if at < 0:
            continue
        for letter in letters:
            pos = padded.find(letter, at + len(phrase))
            if pos >= 0:
                offer(_RANK_PHRASE, pos, letter)
    if core:
        if core[0] in letters and (len(core) == 1 or not core[1].isalpha()):
            offer(_RANK_START, 0, core[0])
        if core[-1] in letters and (len(core) == 1 or not core[-2].isalpha()):
            offer(_RANK_END, len(padded) - 1, core[-1])
    if best is None:
        for letter in letters:
            pos = padded.rfind(letter)
            if pos >= 0:
                offer(_RANK_ANYWHERE, pos, letter)
    return None if best is None else best[2]


def _mvbench_letter(text: str) -> str | None:
    """The letter lmms-eval's MVBench scorer compares with the gold one, or ``None`` when it finds none."""
    if not isinstance(text, str):
        return None
    m = re.match(r"([A-E])\.\s*(.+)$", text.strip(), re.IGNORECASE)
    if m:
        return m.group(1).upper()
    t = text.replace("\n", " ").replace("\t", " ").strip()
    drop_all = re.search(r"\d,\d", t) is not None
    chars = []
    for ch in t:
        if ch in _MVB_PUNCT:
            touches_space = f"{ch} " in t or f" {ch}" in t
            chars.append("" if drop_all or touches_space else " ")
        else:
            chars.append(ch)
    t = re.sub(r"\.(?!\d)", "", "".join(chars), count=32)
    for ch in ("'", '"', ")", "("):
        t = t.strip(ch)
    m = re.search(r"\b([a-e])\b", t.strip().lower())
    return m.group(1).upper() if m else None


def _longvideobench_letter(text: str) -> str | None:
    """The first capital A-E after lmms-eval's LongVideoBench prefixes are deleted; ``None`` where
    lmms-eval would guess a random letter (no capital A-E in the text)."""
    if not isinstance(text, str):
        return None
    t = text.strip()
    for prefix in _LVB_PREFIXES:
        t = t.replace(prefix, "")
    m = re.search(r"[A-E]", t)
    return m.group(0) if m else None


def lmms_eval_choice(text: str, benchmark: str | None, num_options: int) -> str | None:
    """The option letter lmms-eval 0.7.3's task for ``benchmark`` reads out of ``text``, or ``None``.

    * ``videomme``, ``mlvu``: the shared ranked reader over the letters A-D whatever the option count
      (a letter at the start, then at the end, after an answer phrase such as "the answer is", in
      parentheses, before ``.`` / ``:`` / ``)`` / a space, else anywhere; a capital letter inside a word
      counts in the last resort).
    * ``mvbench``: ``"X. text"`` at the start, else the first stand-alone letter a-e in either case after
      punctuation is normalised, so the article "a" reads as option A.
    * ``longvideobench``: the first capital A-E anywhere after the "The answer is"-style prefixes are
      deleted, inside words too ("Based on ..." reads as B). Where no such letter exists lmms-eval draws
      a random letter; this returns ``None`` (counted wrong) instead.
    * any other benchmark: the shared ranked reader over the row's own letters.
    """
    if not isinstance(text, str) or num_options < 1:
        return None
    if benchmark in ("videomme", "mlvu"):
        return _ranked_letter(text, "ABCD")
    if benchmark == "mvbench":
        return _mvbench_letter(text)
    if benchmark == "longvideobench":
        return _longvideobench_letter(text)
    return _ranked_letter(text, "ABCDEFGHIJ"[:num_options])


def extract_answer(text: str, num_options: int, options: tuple[str, ...] = (), *, mode: str = EXTRACTION_MODES[0],
                   benchmark: str | None = None) -> str | None:  # fmt: skip
    """The option letter ``text`` picks under ``mode`` (:data:`EXTRACTION_MODES`, or an old spelling), or ``None``.

    ``strict``: :func:`extract_choice` (``benchmark`` unused). ``lmms-eval``: :func:`lmms_eval_choice`
    for ``benchmark`` (a benchmark name such as ``videomme``, not a result-group label).
    """
    mode = canonical_mode(mode)
    if mode == "strict":
        return extract_choice(text, num_options, options)
    if mode == "lmms-eval":
        return lmms_eval_choice(text, benchmark, num_options)
    raise ValueError(f"answer extraction mode {mode!r} is not one of {', '.join(EXTRACTION_MODES)}")
