"""`askdesk ask`'s written answer as the LLM writes it: its words shown on the terminal while they
stream in, then erased for the checked answer, which may differ (renumbered citations, unsupported
sentences marked, or the extractive answer and a note). The words go to stderr, and only to a
terminal, as the progress bars do: stdout, piped or not, holds the answer alone.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable
from typing import TextIO

from ..types import Answer

# A model's text is untrusted: no escape sequences or carriage returns reach the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class Words:
    """Streamed text on ``out`` (default stderr) when it is a terminal; `erase` removes all of it."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stderr
        self.on = self.out.isatty()
        self.shown = ""

    def show(self, piece: str) -> None:
        if self.on:
            piece = _CONTROL.sub("", piece.replace("\t", " "))
            self.out.write(piece)
            self.out.flush()
            self.shown += piece

    def erase(self) -> None:
        """Move back to the first row shown and clear to the end of the screen."""
        if not self.shown:
            return
        cols = _columns(self.out)
        # Rows drawn: each line wraps every `cols` characters (wide characters may take two
        # columns: then fewer rows are counted, and a row is left behind rather than one too many erased).
        rows = sum(max(1, -(-len(line) // cols)) for line in self.shown.split("\n"))
        self.out.write("\r" + (f"\033[{rows - 1}A" if rows > 1 else "") + "\033[J")
        self.out.flush()
        self.shown = ""


def _columns(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):  # not a real file (a test's), or closed
        return shutil.get_terminal_size().columns


def streamed(items: Iterable[str | Answer], out: TextIO | None = None) -> Answer:
    """The Answer that ends ``items`` (`Desk.ask_stream`); the text pieces before it are shown meanwhile.

    Ctrl-C ends the loop too: the words are erased, and leaving the stream closes the LLM's connection.
    """
    words, answer = Words(out), None
    try:
        for item in items:
            if isinstance(item, Answer):
                answer = item
            else:
                words.show(item)
    finally:
        words.erase()
        getattr(items, "close", lambda: None)()  # at once, not when the traceback that holds it is dropped
    return answer
