"""Words for messages: names from outside (file paths, sources) made safe to print, and the
kind of a file that is not a regular one."""

from __future__ import annotations

import stat

_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def printable(text: str) -> str:
    """`text` with each non-printable character written as its Python escape (ESC as \\x1b,
    CR as \\r, an undecodable byte of a file name as \\udcff): a name cannot clear the screen,
    move the cursor or forge a line of a log. Printable non-ASCII letters stay as they are."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def file_kind(mode: int) -> str:
    """What a `st_mode` that is not a regular file's names, for "X is KIND, not a regular file"."""
    return next((kind for test, kind in _KINDS.items() if test(mode)), "an unknown kind of file")
