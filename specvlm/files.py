"""The checks a user's input file passes before a decoder opens it (a video or an image): it exists, is a
regular file (a FIFO could block a decoder forever), is not empty and can be read.

What this module deliberately does not do: open or decode the file (``specvlm.video``, ``specvlm.images``).
"""

from __future__ import annotations

import os
import stat


def check_input_file(path: str, error, directory: str) -> None:
    """Raise ``error(path, reason)`` unless ``path`` is a readable, non-empty regular file; ``directory``: the
    reason given when ``path`` is a directory."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(path, "file does not exist") from None
    except OSError as err:
        raise error(path, f"cannot stat file: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(path, directory)
    if not stat.S_ISREG(st.st_mode):
        raise error(path, "is not a regular file")
    if st.st_size == 0:
        raise error(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise error(path, "file is not readable (permission denied)")
