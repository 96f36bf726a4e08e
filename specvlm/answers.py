"""Reading a multiple-choice answer out of free text: which option letter a model's answer picks.

Used by the evaluation CLI's accuracy metric and by the embedded pair's own evaluation; useful to any
caller of the API that asks a video multiple-choice question.

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
