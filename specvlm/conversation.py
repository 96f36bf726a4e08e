"""Chat-format conversations with media: the image and video entries of ``messages=`` and the sources
they name or take from the ``images=`` / ``video=`` arguments.

A conversation is a list of turns ``{"role": str, "content": str | list of entries}``. The entries
used are the ones every chat template of the supported families reads:

* ``{"type": "text", "text": str}``;
* ``{"type": "image", "image" | "path" | "url": source}`` (or no source: taken from ``images=``);
* ``{"type": "image_url", "image_url": {"url": source} | source}`` (the OpenAI form of an image entry);
* ``{"type": "video", "video" | "path" | "url": source}`` (or no source: taken from ``video=``).

Anything else would reach the chat template, which drops or garbles what it does not know, so it is
refused with a ``ValueError`` naming the entry (``messages[i]['content'][j]``) and what is allowed: an
entry of another type (audio, ...), a bare string or a list inside a content list (a list nested one
level too deep), a text entry whose ``text`` is not a string (or not valid Unicode: :func:`check_text`), a conversation
wrapped in an extra list (a batch of conversations), a turn whose role is not a string.

What this module deliberately does not do: load media or apply a chat template (the engine and the stock
processor do).
"""

from __future__ import annotations

#: Entry types a content list may hold.
ENTRY_TYPES = ("text", "image", "image_url", "video")
_IMAGE_KEYS = ("image", "path", "url")
_VIDEO_KEYS = ("video", "path", "url")


def check_text(text: str, where: str) -> str:
    """``text``, or ValueError naming ``where`` when it is not valid Unicode: a lone surrogate, which is
    how Python holds bytes that were not UTF-8 (``os.fsdecode``, ``errors="surrogateescape"``); the
    tokenizer cannot encode it."""
    for i, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            raise ValueError(
                f"{where} is not valid Unicode text: a lone surrogate {char!r} at character {i} (bytes that were not "
                "UTF-8?); decode the text as UTF-8 first"
            )
    return text


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _image_url(entry: dict, where: str):
    """The source of an OpenAI-style ``{"type": "image_url", "image_url": {"url": ...}}`` entry."""
    value = entry.get("image_url")
    if isinstance(value, dict):
        if "url" not in value:
            raise ValueError(f"{where} is an image_url entry whose 'image_url' has no 'url': {_short(entry)}")
        return value["url"]
    if value is None:
        return next((entry[k] for k in _IMAGE_KEYS if entry.get(k) is not None), None)
    return value


def _entry(entry, where: str, images: list, videos: list) -> dict:
    """One content entry checked and reduced (a media entry to its bare ``{"type": ...}``)."""
    if isinstance(entry, (list, tuple)):
        raise ValueError(
            f"{where} is a {type(entry).__name__}, not an entry: the content list is nested one level too deep; "
            "give the entries ({'type': 'text' | 'image' | 'video', ...}) directly in 'content'"
        )
    if isinstance(entry, str):
        raise ValueError(
            f"{where} is a bare string {_short(entry)}; inside a content list write text as {{'type': 'text', 'text': ...}}"
        )
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a dict entry with a 'type' ({', '.join(ENTRY_TYPES)}), got {type(entry).__name__}")
    kind = entry.get("type")
    if kind not in ENTRY_TYPES:
        got = "no 'type'" if "type" not in entry else f"type {kind!r}"
        raise ValueError(f"{where} has {got}; SpecVLM takes entries of type {', '.join(ENTRY_TYPES)}: {_short(entry)}")
    if kind == "text":
        text = entry.get("text")
        if not isinstance(text, str):
            got = "no 'text'" if "text" not in entry else f"'text' of type {type(text).__name__} ({_short(text)})"
            raise ValueError(f"{where} is a text entry with {got}; its 'text' must be a string")
        check_text(text, f"{where}['text']")
        return entry
    if kind == "video":
        videos.append(next((entry[k] for k in _VIDEO_KEYS if entry.get(k) is not None), None))
        return {"type": "video"}
    source = _image_url(entry, where) if kind == "image_url" else next(
        (entry[k] for k in _IMAGE_KEYS if entry.get(k) is not None), None
    )
    images.append(source)
    return {"type": "image"}


def media_conversation(messages) -> tuple[list, list, list]:
    """(the conversation with its image and video entries reduced to ``{"type": "image"}`` /
    ``{"type": "video"}``, the video entries' sources, the image entries' sources; None where an entry
    names none). Raises ValueError for a malformed conversation, naming the turn or entry."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} turns, got {_short(messages)}")
    out, videos, images = [], [], []
    for i, turn in enumerate(messages):
        if isinstance(turn, (list, tuple)):
            raise ValueError(
                f"messages[{i}] is a {type(turn).__name__}, not a turn: messages is nested one level too deep (a batch "
                "of conversations?); SpecVLM takes one conversation, a list of {'role', 'content'} dicts"
            )
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {_short(turn)}")
        if not isinstance(turn["role"], str):
            raise ValueError(f"messages[{i}]['role'] must be a string (e.g. 'user'), got {_short(turn['role'])}")
        content = turn["content"]
        if isinstance(content, str):
            check_text(content, f"messages[{i}]['content']")
            out.append(dict(turn))
            continue
        if not isinstance(content, (list, tuple)):
            raise ValueError(
                f"messages[{i}]['content'] must be a string or a list of entries, got {type(content).__name__}"
            )
        entries = [_entry(e, f"messages[{i}]['content'][{j}]", images, videos) for j, e in enumerate(content)]
        out.append({**turn, "content": entries})
    if len(videos) > 1:
        raise ValueError(f"the conversation holds {len(videos)} video entries; at most one video per prompt is supported")
    if not videos and not images:
        raise ValueError(
            "the conversation holds no video or image entry; add {'type': 'video', 'video': ...} or "
            "{'type': 'image', 'image': ...} to a turn's content (an entry naming no source takes video= / images=)"
        )
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
