"""A Milvus store behind the seams: chunk records and vectors, BM25 run by Milvus, dates as filter expressions.

``--store /tmp/desk.db`` (``ASKDESK_STORE``, ``Config.store``) opens a Milvus Lite file, the real
Milvus engine in this process; ``--store http://host:19530`` a Milvus server or cluster, with the
same code. ``#name`` after either names the collections (default ``askdesk``)::

    NAME_meta            small rows: "live" (the generation answering, its manifest: model, chunk
                         settings, corpus folder; the state before the last write, for rollback; a
                         version each write bumps), "writer" (a server's write lease), "journal" (the
                         article batch a write is changing, or a rollback, until done)
    NAME_GEN_articles    each article as JSON (its text, fields and sentence spans) in pieces of
                         16,000 characters, so any article fits VARCHAR's 65,535 bytes
    NAME_GEN_sentences   a row per sentence, keyed by article id and position: a hash of its text
                         (a new article sharing most sentences with a stored one is a near-duplicate)
    NAME_GEN_chunks      a row per chunk, keyed by `vectors.chunk_key`: chunk id, article id, date
                         (`day_number`), span, float32 vector, the float16 vectors of the sentences
                         inside it (pooled in the chunk's pass, as the folder stores them), and
                         askdesk's own terms of its title and text, from which Milvus' BM25 function
                         makes a sparse vector

A question reads: the dense search and the BM25 search (each with the date window as a filter
expression; both bring back their hits' chunk rows, sentence vectors included, and BM25's the
chunk vectors too), the idf of the question's words (one request), the BM25 scores of the chunks
only the dense side found, and the articles of the candidates (cached per snapshot): about five
requests. Nothing is loaded at open beyond the manifest and the counts.

BM25 runs in Milvus over askdesk's terms (Snowball stems, its stopwords, numbers kept whole,
``text.terms``) through a whitespace analyzer, with askdesk's k1 and b, so its scores are the
folder's. Milvus' English analyzer on the raw text is the other choice (``analyzer="english"``);
docs/scaling.md has the measurement that chose. A second BM25 field holds each chunk's distinct
terms with b = 0: a one-word search there scores exactly the word's idf (`MilvusLexical.idf_of`).

Writes touch only the rows of the articles they change (upsert, delete by article id). Milvus has
no transaction across collections, so a write goes in batches of articles: it records the batch in
"journal", writes articles, then sentences, then chunks (a search never finds a chunk whose article
is missing), and removes in the opposite order. A writer killed mid-batch leaves that
batch's rows partly written; the next write (any `askdesk index`, `add`, `remove`) first deletes
them, and as ids come from content, writing them again gives the same rows. Embedding a new model
or chunking writes a whole new generation of collections and switches "live" only when it is
complete (``live`` is one row: the switch is one insert). `milvus_rollback` keeps the state before
the last write in the store's own rows (the generation a rebuild replaced; the rows a write to the
live generation replaced or deleted, in an undo set ``NAME_uN_*``), for `askdesk rollback`.

This module is the store: its connection, its meta rows, its generations, what is read and
written by article. Beside it: `milvus_collections` (the schemas and the row requests),
`milvus_snapshot` (what answering reads: `MilvusSnapshot`, `MilvusVectors`, `MilvusLexical`),
`milvus_write` (an `Embedded` article and the rows it becomes), `milvus_rollback` (the state
before the last write) and `milvus_lock` (who holds a Milvus Lite file; waiting out the engine
of a killed process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import BadInputError, IndexLockedError, IndexMismatchError, IndexMissingError, StoreUnavailableError
from ..models.embed import Embedder
from ..types import Article
from . import milvus_lock
from .milvus_collections import (
    INSTALL,
    MAX_LIMIT,
    count_rows,
    create_generation,
    create_meta,
    get_rows,
    import_pymilvus,
    int_list,
    put_rows,
    query_all,
    str_list,
)
from .milvus_snapshot import MilvusSnapshot
from .milvus_write import Embedded, article_rows, rows_of

logger = logging.getLogger(__name__)

FORMAT = 2  # the store's layout (these modules); each generation's manifest records it
# 2: an article's record holds its chunk count and its statements (who says what), found on write
_LITE_LOCKS: dict[str, threading.Lock] = {}  # one writer per Milvus Lite file in this process


def _busy(path: Path, pid: int) -> IndexLockedError:
    who = f"pid {pid}; " if pid else ""
    return IndexLockedError(
        f"the Milvus Lite file {str(path)!r} is open in another process ({who}Milvus Lite serves one process at a "
        "time, so that process is the only reader and writer): stop it (an `askdesk serve` page?) and run again, "
        "or serve the file with a Milvus server and use its http:// URI")


# ---- the store: connection, collections, records -------------------------------------------------

def parse_uri(uri: str) -> tuple[str, str, str]:
    """``"/tmp/desk.db#news"`` -> (what MilvusClient opens, collection name prefix, "lite" or "server")."""
    where, _, name = str(uri).partition("#")
    name = name or "askdesk"
    if not name.replace("_", "a").isalnum() or not name[0].isalpha() or len(name) > 40:
        raise BadInputError(f"store name {name!r} (after '#') must be letters, digits and '_', starting with a letter")
    if where.lower().endswith(".db"):
        return str(Path(where).expanduser().absolute()), name, "lite"
    return where, name, "server"


class MilvusStore:
    """One Milvus store: a Milvus Lite file or a server, connected on first use.

    Args:
        uri: ``PATH.db`` or ``http(s)://host:port``, optionally ``#name`` (the collections' prefix).
        analyzer: for a new store, how BM25 reads text: "askdesk" (askdesk's terms through
            Milvus' whitespace analyzer: the folder's scores) or "english" (Milvus' own analyzer).
        sentences: "stored" or "question" (see `MilvusSnapshot`).
    """

    def __init__(self, uri: str, *, analyzer: str = "askdesk", sentences: str = "stored",
                 search_params: dict | None = None):
        self.uri = uri
        self.where, self.name, self.kind = parse_uri(uri)
        self.analyzer, self.sentences, self.search_params = analyzer, sentences, search_params
        self._client = None
        self._connect_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MilvusStore({self.uri!r})"

    # -- connection ---------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            with self._connect_lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self):
        pymilvus = import_pymilvus()
        if self.kind == "lite":
            path = Path(self.where)
            try:
                with warnings.catch_warnings():  # milvus-lite 2.5.1 imports the deprecated pkg_resources
                    warnings.simplefilter("ignore")
                    import milvus_lite  # noqa: F401 - pymilvus opens .db files with it
            except ImportError as e:
                raise StoreUnavailableError(f"{INSTALL} (milvus-lite 2.5.1 could not be imported: {e})") from None
            path.parent.mkdir(parents=True, exist_ok=True)
            from milvus_lite.server_manager import server_manager_instance

            # Asked before starting an engine, so that milvus-lite logs nothing; never when this process
            # serves the file (closing a probe of its own lock would release it).
            if str(path.resolve()) not in server_manager_instance._servers:
                pid = milvus_lock.wait_until_free(path)  # an engine left by a killed process: waited for
                if pid is not None:
                    raise _busy(path, pid)
            try:
                return pymilvus.MilvusClient(str(path))
            except RuntimeError as e:  # milvus-lite's own checks of the file name
                raise BadInputError(f"{str(path)!r} cannot be a Milvus Lite file: {e}") from None
            except pymilvus.exceptions.MilvusException as e:
                pid = milvus_lock.holder(milvus_lock.lock_file(path))  # taken since it was asked?
                if pid is not None:
                    raise _busy(path, pid) from None
                raise StoreUnavailableError(f"Milvus Lite could not start on {str(path)!r} ({e.message}); what its "
                                            "engine printed above says why") from None
        try:
            return pymilvus.MilvusClient(uri=self.where, timeout=10)
        except pymilvus.exceptions.MilvusException as e:
            raise StoreUnavailableError(f"cannot reach the Milvus server at {self.where!r} ({e.message}); "
                                        "start it, or check the address") from None

    def close(self) -> None:
        """Close the connection; for a Milvus Lite file also stop its engine, so another process can open it."""
        with self._connect_lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None
            if self.kind == "lite":
                with contextlib.suppress(ImportError):
                    from milvus_lite.server_manager import server_manager_instance

                    if str(Path(self.where).resolve()) in server_manager_instance._servers:
                        server_manager_instance.release_server(self.where)

    def writer_lock(self) -> threading.Lock:
        """The lock writers of this store in this process take (one per Milvus Lite file or server)."""
        return _LITE_LOCKS.setdefault(f"{self.where}#{self.name}", threading.Lock())

    # -- meta rows ------------------------------------------------------------------------------
    @property
    def meta(self) -> str:
        return f"{self.name}_meta"

    def names(self, gen: str) -> dict[str, str]:
        return {k: f"{self.name}_{gen}_{k}" for k in ("articles", "sentences", "chunks")}

    # Milvus Lite's upsert deletes the old row, then inserts the new one: a process killed between
    # the two loses the row (4 kills in 12 while one row was upserted in a loop). So the rows a crash
    # must not lose are never replaced: a write inserts a new "live:N" row (and deletes the older
    # ones after), and a "journal:N" row per batch, deleted when the batch is complete. Only the
    # lease ("writer") is upserted: losing it frees the store, as its expiry would.
    def _rows(self, prefix: str) -> list[tuple[int, dict]]:
        if not self.client.has_collection(self.meta):
            return []
        rows = self.client.query(self.meta, filter=f'key like "{prefix}:%"', output_fields=["key", "value"],
                                 limit=MAX_LIMIT)
        return sorted((int(r["key"].rsplit(":", 1)[1]), json.loads(r["value"])) for r in rows)

    def _insert_meta(self, prefix: str, value: dict) -> str:
        self._ensure_meta()
        old = self._rows(prefix)
        key = f"{prefix}:{(old[-1][0] + 1 if old else 1):012d}"
        self.client.insert(self.meta, [{"key": key, "value": json.dumps(value), "_v": [0.0, 0.0]}])
        return key

    def get_meta(self, key: str) -> dict | None:
        if not self.client.has_collection(self.meta):
            return None
        rows = self.client.get(self.meta, ids=[key], output_fields=["value"])
        return json.loads(rows[0]["value"]) if rows else None

    def put_meta(self, key: str, value: dict) -> None:
        """Replace a row that may be lost in a crash (the lease)."""
        self._ensure_meta()
        self.client.upsert(self.meta, [{"key": key, "value": json.dumps(value), "_v": [0.0, 0.0]}])

    def delete_meta(self, *keys: str) -> None:
        if keys and self.client.has_collection(self.meta):
            self.client.delete(self.meta, ids=list(keys))

    def _ensure_meta(self) -> None:
        if not self.client.has_collection(self.meta):
            create_meta(self.client, self.meta)

    def live(self) -> dict | None:
        """``{"gen", "version", "manifest", "previous"}`` of the generation answering (version: counts
        the writes; previous: what `milvus_rollback` brings back, or None), or None for an empty store."""
        rows = self._rows("live")
        return {"previous": None, **rows[-1][1], "version": rows[-1][0]} if rows else None

    def set_live(self, gen: str, manifest: dict, previous: dict | None = None) -> None:
        """Point the store at ``gen`` with its manifest, and at the state before it (``previous``,
        as `milvus_rollback` records it): one inserted row (older ones deleted after)."""
        old = self._rows("live")
        self._insert_meta("live", {"gen": gen, "manifest": manifest, "previous": previous})
        self.delete_meta(*(f"live:{n:012d}" for n, _ in old))

    def manifest(self, gen: str) -> dict | None:
        live = self.live()
        return live["manifest"] if live and live["gen"] == gen else None

    def journal(self) -> list[tuple[str, dict]]:
        """The batches a write has begun and not finished: (row key, {"gen", "ids"})."""
        return [(f"journal:{n:012d}", v) for n, v in self._rows("journal")]

    def begin(self, gen: str, ids: Sequence[str], **more) -> str:
        """Record the articles a batch is about to change (``more``: what else finishing it needs);
        returns the row `end` deletes."""
        return self._insert_meta("journal", {"gen": gen, "ids": list(ids), "pid": os.getpid(), **more})

    def end(self, key: str) -> None:
        self.delete_meta(key)

    # -- generations ----------------------------------------------------------------------------
    def create(self, gen: str, dim: int, analyzer: str, parts: Sequence[str] = ("articles", "sentences", "chunks")
               ) -> None:
        """The collections of a generation (the meta collection too, the first time); ``parts``
        leaves some out (the VectorIndex contract tests need only the chunks)."""
        self._ensure_meta()
        create_generation(self.client, self.names(gen), dim, analyzer, parts)

    def drop(self, gen: str) -> None:
        for n in self.names(gen).values():
            if self.client.has_collection(n):
                self.client.drop_collection(n)

    def generations(self, kind: str = "g") -> list[str]:
        """Every generation with collections in the store (a killed rebuild's too); ``kind`` "u":
        the undo sets instead (`milvus_rollback`), named the same way."""
        own = re.compile(rf"{self.name}_({kind}\d+)_(articles|sentences|chunks)")
        found = {m[1] for n in self.client.list_collections() if (m := own.fullmatch(n))}
        return sorted(found, key=lambda g: int(g[1:]))

    # -- reading ----------------------------------------------------------------------------------
    def snapshot(self, *, expect: dict | None = None, embedder: Embedder | None = None) -> MilvusSnapshot:
        """The live generation for answering; raises IndexMissingError or IndexMismatchError."""
        live = self.live()
        if live is None:
            raise IndexMissingError(f"no index in the Milvus store {self.uri!r}; build one with: "
                                    f"askdesk index corpus/ --store {self.uri}")
        gen = live["gen"]
        m = dict(live["manifest"])
        if m.get("format") != FORMAT:
            raise IndexMismatchError(f"the Milvus store {self.uri!r} has layout {m.get('format')!r}, this askdesk "
                                     f"reads {FORMAT}; bring it up to date with: askdesk index --store {self.uri} "
                                     "(embeds its articles again and keeps them all)")
        for key, want in (expect or {}).items():
            if m.get(key) != want:
                raise IndexMismatchError(
                    f"the Milvus store {self.uri!r} was built with {key}={m.get(key)!r} but askdesk is set to "
                    f"{want!r}; set ASKDESK_{key.upper()}={m.get(key)}, or embed it again with: "
                    f"askdesk index --store {self.uri} --{key} {want}")
        names = self.names(gen)
        m["n_chunks"] = count_rows(self.client, names["chunks"])
        m["n_articles"] = self.n_articles(gen)
        m["store"] = self.uri
        if self.journal():
            logger.info("a write to %s is running, or was interrupted (the next write finishes it)", self.uri)
        return MilvusSnapshot(self, gen, m, sentences=self.sentences, embedder=embedder)

    def read_articles(self, gen: str, ids: Sequence[str] | None
                      ) -> dict[str, tuple[Article, list[tuple[int, int]]]]:
        """(Article, sentence spans) by id; ``ids`` None: every article, in the order written."""
        return {i: (a, spans) for i, (a, spans, _) in self.read_records(gen, ids).items()}

    def read_records(self, gen: str, ids: Sequence[str] | None
                     ) -> dict[str, tuple[Article, list[tuple[int, int]], dict]]:
        """(Article, sentence spans, the rest of its record) by id, as `read_articles`."""
        name = self.names(gen)["articles"]
        pieces: dict[str, list[tuple[int, str, str]]] = {}
        fields = ["article_id", "part", "meta", "blob"]
        if ids is None:
            rows: Iterable[dict] = query_all(self.client, name, "part >= 0", fields)
        else:  # by key: part 0 holds the count of parts (a filter on article_id took 3x as long at 100k)
            rows = get_rows(self.client, name, [f"{i}:0" for i in ids], fields)
            more = [f"{r['article_id']}:{k}" for r in rows for k in range(1, json.loads(r["meta"])["parts"])]
            rows += get_rows(self.client, name, more, fields) if more else []
        for r in rows:
            pieces.setdefault(r["article_id"], []).append((int(r["part"]), r["meta"], r["blob"]))
        out = {}
        for aid, parts in pieces.items():
            parts.sort()
            meta = json.loads(parts[0][1])
            rec = json.loads("".join(p[2] for p in parts))
            if meta.get("parts") != len(parts):  # a piece missing: a killed write, repaired by the next one
                continue
            fields_ = {k: v for k, v in meta.items() if k != "parts"}
            out[aid] = (Article(id=aid, text=rec.pop("text"), **fields_), [tuple(s) for s in rec.pop("sentences")],
                        rec)
        if ids is None:
            order = sorted(out, key=lambda i: out[i][0].path or i)
            return {i: out[i] for i in order}
        return out

    def listing(self, gen: str, scope: Sequence[str] | None = None) -> list[Article]:
        """The articles' fields without their text (``text=""``): what a writer's selection needs.

        ``scope``: only the articles with these ids or keys (`build.key`), not all."""
        out = []
        name = self.names(gen)["articles"]
        if scope is None:
            rows: Iterable[dict] = query_all(self.client, name, "part == 0", ["article_id", "meta"])
        else:
            scope = list(scope)
            rows = [r for i in range(0, len(scope), 500) for r in self.client.query(
                name, filter=f"part == 0 and (article_id in {str_list(scope[i:i + 500])} or akey in "
                             f"{str_list(scope[i:i + 500])})", output_fields=["article_id", "meta"], limit=MAX_LIMIT)]
        for r in rows:
            meta = json.loads(r["meta"])
            meta.pop("parts", None)
            out.append(Article(id=r["article_id"], text="", **meta))
        return sorted({a.id: a for a in out}.values(), key=lambda a: a.path or a.id)

    def find(self, refs: Sequence[str]) -> dict[str, str]:
        """Article id by reference (an id or a path), for the references that name an article."""
        live = self.live()
        if live is None:
            return {}
        gen, out = live["gen"], {}
        for i in range(0, len(refs), 500):
            part = list(refs[i:i + 500])
            for r in self.client.query(self.names(gen)["articles"], output_fields=["article_id", "path"],
                                       filter=f"part == 0 and (article_id in {str_list(part)} or path in "
                                              f"{str_list(part)})", limit=MAX_LIMIT):
                out.update({ref: r["article_id"] for ref in (r["article_id"], r["path"]) if ref in part})
        return out

    def n_articles(self, gen: str) -> int:
        return count_rows(self.client, self.names(gen)["articles"], "part == 0")

    def recorded_corpus(self) -> Path | None:
        """The article folder the store was last synced with, if it still exists (for a Milvus
        Lite file, also where it is from the file: a project folder moved as a whole finds it)."""
        live = self.live()
        corpus = (live["manifest"].get("corpus") or {}) if live else {}
        for p in (corpus.get("path"), corpus.get("relative") and Path(self.where).parent / corpus["relative"]):
            if p and Path(p).is_dir():
                return Path(p).resolve()
        return None

    def corpus_record(self, folder: str | Path | None) -> dict | None:
        """The manifest's "corpus" entry for ``folder``, as the index folder records it."""
        if folder is None:
            return None
        folder = Path(folder).resolve()
        if self.kind != "lite":
            return {"path": str(folder)}
        return {"path": str(folder), "relative": os.path.relpath(folder, Path(self.where).parent.resolve())}

    # -- writing rows --------------------------------------------------------------------------------
    def write_articles(self, gen: str, items: Sequence[Embedded], analyzer: str) -> None:
        """Articles, then sentences, then chunks: a chunk a search finds has its article and sentences."""
        names, rows = self.names(gen), [rows_of(e, analyzer) for e in items]
        for i, part in enumerate(("articles", "sentences", "chunks")):
            put_rows(self.client, names[part], [r for three in rows for r in three[i]])

    def put_records(self, gen: str, records: Sequence[tuple[Article, list[tuple[int, int]], dict]]) -> None:
        """Rewrite articles' records only (a new path for the same text): (article, spans, extra)
        as `read_records` gives them."""
        put_rows(self.client, self.names(gen)["articles"],
                 [r for a, spans, extra in records for r in article_rows(a, spans, extra)])

    def delete_articles(self, gen: str, ids: Sequence[str]) -> None:
        """Chunks first (no search finds them any more), then sentences, then the articles."""
        names = self.names(gen)
        for i in range(0, len(ids), 500):
            expr = f"article_id in {str_list(ids[i:i + 500])}"
            for n in ("chunks", "sentences", "articles"):
                self.client.delete(names[n], filter=expr)

    def holders(self, gen: str, hashes: Sequence[int]) -> set[str]:
        """The articles holding a sentence with one of these text hashes."""
        out: set[str] = set()
        name = self.names(gen)["sentences"]
        for i in range(0, len(hashes), 1_000):
            rows = self.client.query(name, filter=f"hash in {int_list(hashes[i:i + 1_000])}",
                                     output_fields=["article_id"], limit=MAX_LIMIT)
            out |= {r["article_id"] for r in rows}
        return out
