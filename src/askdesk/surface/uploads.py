"""Uploads from the page: files land inside the corpus folder, under safe names, never over
another file."""

from __future__ import annotations

import filecmp
import itertools
import os
import re
import shutil
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from ..errors import BadInputError

UPLOAD_SUFFIXES = (".txt", ".md", ".html", ".htm")  # a subset of what ingest reads


def safe_filename(name: str) -> str:
    """An uploaded file name reduced to a plain basename with an article suffix.

    Raises:
        BadInputError: the suffix is not one the page accepts.
    """
    name = unicodedata.normalize("NFKC", name)  # first, so full-width "．．／" cannot become "../" later
    base = re.split(r"[\\/]", name)[-1]  # browsers may send either separator
    stem, dot, suffix = base.rpartition(".")
    if not dot or "." + suffix.lower() not in UPLOAD_SUFFIXES:
        raise BadInputError(f"{base!r} is not a {', '.join(UPLOAD_SUFFIXES)} file; "
                            "save it as one and upload it again")
    stem = re.sub(r"[^\w-]+", "_", stem).strip("_-")[:80] or "article"  # no dots: never hidden, never ".."
    return f"{stem}.{suffix.lower()}"


def store_uploads(paths: Iterable[str | Path], corpus: Path, *,
                  max_bytes: int) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    """Copy uploaded files into `corpus` under safe names; an identical file already there is reused.

    Returns:
        (stored paths, the subset newly created, [(file name, reason)] for files refused).
    """
    root = Path(corpus).resolve()
    root.mkdir(parents=True, exist_ok=True)
    stored, created, rejected = [], [], []
    for src in map(Path, paths):
        try:
            name = safe_filename(src.name)
            size = src.stat().st_size
            if size > max_bytes:
                raise BadInputError(f"{src.name!r} is {size:,} bytes, over the {max_bytes:,}-byte limit; "
                                    "split it, or raise ASKDESK_MAX_FILE_BYTES and restart")
            stem, suffix = os.path.splitext(name)
            for i in itertools.count(1):  # never overwrite a different file: x.txt, x-2.txt, x-3.txt ...
                dest = root / (name if i == 1 else f"{stem}-{i}{suffix}")
                if not dest.exists() or filecmp.cmp(dest, src, shallow=False):
                    break
            if dest.parent != root:  # cannot happen after safe_filename; checked because it matters
                raise BadInputError(f"{src.name!r} would land outside {str(root)!r}")
            if not dest.exists():
                tmp = root / f".{dest.name}.{os.getpid()}.part"  # hidden: a concurrent build skips it
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
                created.append(dest)
            stored.append(dest)
        except (BadInputError, OSError) as e:
            rejected.append((src.name, str(e)))
    return stored, created, rejected
