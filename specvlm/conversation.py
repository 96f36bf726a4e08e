"""Chat-format conversations with media: the image and video entries of ``messages=`` and the sources
they name or take from the ``images=`` / ``video=`` arguments.

What this module deliberately does not do: load media or apply a chat template (the engine and the stock
processor do).
"""

from __future__ import annotations


def media_conversation(messages) -> tuple[list, list, list]:
    """(the conversation with its image and video entries reduced to ``{"type": "image"}`` /
    ``{"type": "video"}``, the video entries' sources, the image entries' sources; None where an entry
    names none). Raises ValueError for a malformed conversation."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} turns, got {messages!r}")
    out, videos, images = [], [], []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {turn!r}")
        content = turn["content"]
        if isinstance(content, str):
            out.append(dict(turn))
            continue
        if not isinstance(content, (list, tuple)):
            raise ValueError(f"messages[{i}]['content'] must be a string or a list of entries, got {type(content).__name__}")
        entries = []
        for entry in content:
            kind = entry.get("type") if isinstance(entry, dict) else None
            if kind in ("image", "image_url"):
                images.append(next((entry[k] for k in ("image", "path", "url", "image_url") if entry.get(k) is not None), None))
                entries.append({"type": "image"})
            elif kind == "video":
                videos.append(next((entry[k] for k in ("video", "path", "url") if entry.get(k) is not None), None))
                entries.append({"type": "video"})
            else:
                entries.append(entry)
        out.append({**turn, "content": entries})
    if len(videos) > 1:
        raise ValueError(f"the conversation holds {len(videos)} video entries; at most one video per prompt is supported")
    if not videos and not images:
        raise ValueError("the conversation holds no video or image entry")
    return out, videos, images


def fill_media(kind: str, sources: list, given) -> list:
    """The entries' sources, the ones naming none filled in order from ``given`` (the ``video`` /
    ``images`` argument); raises when they do not add up."""
    given = [] if given is None else list(given)
    missing = sum(source is None for source in sources)
    if missing != len(given):
        named = len(sources) - missing
        raise ValueError(
            f"the conversation has {len(sources)} {kind} entries, {named} of them naming their {kind}, and {len(given)} "
            f"{kind}{'s' if kind == 'image' else ''} passed as an argument: pass one for each entry that names none"
        )
    filled = iter(given)
    return [next(filled) if source is None else source for source in sources]
