"""The askdesk error hierarchy: every message quotes the bad value and names the fix."""

from __future__ import annotations


class AskdeskError(Exception):
    """Base class for errors a user can act on; the CLI prints them as one line."""


class IndexMissingError(AskdeskError):
    """No index at the given folder."""


class IndexMismatchError(AskdeskError):
    """The index was built with another model, format or chunker than this askdesk expects."""


class IndexCorruptError(AskdeskError):
    """An index file is missing, truncated or unreadable."""


class IndexWriteError(AskdeskError):
    """Writing a new generation failed (a full disk, no permission); the old index is intact."""


class IndexLockedError(AskdeskError):
    """Another process is writing the index."""


class EmptyCorpusError(AskdeskError):
    """No readable article was found."""


class BadQuestionError(AskdeskError):
    """The question is empty or too long."""


class BadInputError(AskdeskError):
    """A file, option or data set is not of the expected form."""


class GeneratorError(AskdeskError):
    """The LLM server failed, timed out or sent no completion (Desk.ask falls back, never raises it)."""


class StoreUnavailableError(AskdeskError):
    """The store's engine is not installed or cannot be reached (a Milvus server that is down)."""


class ParserUnavailableError(AskdeskError):
    """spaCy or its English model (who said what) is not installed, or is not the pinned model."""
