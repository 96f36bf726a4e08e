"""Helpers the command-line tests share: the generate command's arguments and the one error line it prints."""

from __future__ import annotations

import pytest

from specvlm.cli import main as cli_main

PROMPT = "Describe the video."


def _generate_argv(target, video, *extra):
    return ["generate", "--target", str(target), "--video", str(video), "--prompt", PROMPT, "--max-new-tokens", "2", *extra]


def _error_line(err: str) -> str:
    """The CLI's one-line error (stderr may also hold progress bars)."""
    lines = [line for line in err.splitlines() if line.startswith("specvlm: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _argparse_error(argv, capsys) -> str:
    """argparse's error line for a malformed flag value (exit code 2)."""
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]
