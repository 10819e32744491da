"""Data preparation for the reader: labelled and generated (question, window, answer) examples.

    python training/prepare.py --explorer GIT_DIR --squad ../shared/data/squad-dev --out training/data

GIT_DIR is the snapshot of rajpurkar/SQuAD-explorer (the search tool's fetch); its gh-pages commit
e0c66cf holds one page per SQuAD dev article, with the SQuAD 2.0 questions (unanswerable ones
marked "no-answer"). Only the pages of the articles in squad-dev are read (never another SQuAD
dev article: see training/README.md). Everything is CC BY-SA 4.0.

Writes, under --out:
- train.jsonl: one example a line, {"q", "ctx", "start" (char offset of the answer in ctx, -1 for
  none), "answer", "kind"}; the kinds say where an example came from (README's table).
- heldout-squad2.json: the held-out articles as a SQuAD 2.0 file (gold paragraphs, both kinds of
  question), for `askdesk eval reader` and training/evaluate.py.
- stats.json: counts by kind.

The examples are windows as the reader sees them at question time (askdesk.reader_window): a
sentence with its neighbours. Most of the signal is generated from the labelled pages:
- gold: the window around the sentence that holds a labelled answer (and a shifted one, where
  that sentence is a neighbour);
- sibling: the same question on another sentence of its paragraph whose window lacks the answer
  (the "neighbouring fact" a reader must refuse);
- nearby: the same question on a sentence of another paragraph of the same article sharing its
  words (same topic, other fact);
- swap: the question with one of its numbers, years or names replaced by another of the same
  article, asked of its gold window (the fact next to the one the text holds);
- swap-word (only with --swap-words; not in the shipped run): the question with one of its content
  words that the gold window shares replaced by another word of the article;
- squad2: SQuAD 2.0's own unanswerable questions on the sentences of their paragraph most like them.
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from askdesk.articles.chunk import split_sentences  # noqa: E402
from askdesk.models.reader import window  # noqa: E402

COMMIT = "e0c66cfec263165fb3c15cb76a22175e371b71d7"
# Held out of every weight and threshold: six squad-dev articles of its second half, each with a
# SQuAD 2.0 page (so both answerable and unanswerable questions are measured on them).
HELD_OUT = ("Force", "Geology", "Huguenot", "Immune_system", "Imperialism", "Islamism")
SEED = 13

_STOP = set("""a an the of in on at to for from by with and or but is are was were be been being what which who
whom whose when where why how did does do that this these those it its as into than then there their they he she his her
many much one not no can could would should may might will shall has have had""".split())


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2}


def read_pages(git_dir: str, titles: list[str]) -> dict[str, list[dict]]:
    """{title: [{"context", "qas": [{"id", "question", "answers": [str], "impossible"}]}]} from the v2.0 pages."""
    out = {}
    for t in titles:
        try:
            page = subprocess.run(["git", "--git-dir", git_dir, "show", f"{COMMIT}:explore/v2.0/dev/{t}.html"],
                                  capture_output=True, check=True).stdout.decode("utf-8")
        except subprocess.CalledProcessError:
            continue  # 5 of squad-dev's 24 articles have no SQuAD 2.0 page
        paras = []
        for block in page.split('<div class="para-wrap">')[1:]:
            ctx = html.unescape(re.search(r"<pre>(.*?)</pre>", block, re.S).group(1))
            qas = []
            for qa in re.finditer(r'<div class="qa-wrap" data-id="([0-9a-f]+)">(.*?)</ul></div>', block, re.S):
                q = html.unescape(re.search(r'class="question">(.*?)</strong>', qa.group(2), re.S).group(1)).strip()
                found = re.findall(r'<span class="answer">(.*?)</span>', qa.group(2), re.S)
                answers = [html.unescape(a) for a in found]
                qas.append({"id": qa.group(1), "question": q, "answers": answers,
                            "impossible": 'class="no-answer"' in qa.group(2)})
            paras.append({"context": ctx, "qas": qas})
        out[t] = paras
    return out


def read_v11(squad: Path) -> dict[str, list[dict]]:
    data = json.loads((squad / "squad.json").read_text())["data"]
    return {a["title"]: [{"context": p["context"], "qas": [
        {"id": q["id"], "question": q["question"], "answers": [x["text"] for x in q["answers"]], "impossible": False}
        for q in p["qas"]]} for p in a["paragraphs"]] for a in data}


def merged(v11: dict, v2: dict) -> dict[str, list[dict]]:
    """The v2.0 pages where an article has one (they hold its v1.1 questions too), else v1.1."""
    out = {}
    for title, paras in v11.items():
        if title not in v2:
            out[title] = paras
            continue
        seen = {q["id"] for p in v2[title] for q in p["qas"]}
        extra = {p["context"]: [q for q in p["qas"] if q["id"] not in seen] for p in paras}
        out[title] = [{"context": p["context"], "qas": p["qas"] + extra.get(p["context"], [])} for p in v2[title]]
    return out


def find(ctx: str, answers: list[str]) -> tuple[int, str] | None:
    """The first gold answer found in ctx (shortest first: the reader is asked for the short answer)."""
    for a in sorted({a.strip() for a in answers if a.strip()}, key=lambda a: (len(a), a)):  # no set-order ties
        i = ctx.find(a)
        if i >= 0:
            return i, a
    return None


_SWAPPABLE = re.compile(r"\b(?:1[0-9]{3}|20[0-9]{2}|\d[\d,.]*|[A-Z][a-z]{2,}(?: [A-Z][a-z]{2,})*)\b")


def swap(question: str, gold_text: str, article: str, rng: random.Random) -> str | None:
    """The question with a number, year or name it shares with the gold window replaced by another of the article."""
    cands = [m for m in _SWAPPABLE.finditer(question) if m.group(0) in gold_text and m.start() > 0]
    if not cands:
        return None
    m = rng.choice(cands)
    tok = m.group(0)
    if re.fullmatch(r"1[0-9]{3}|20[0-9]{2}", tok):
        new = str(int(tok) + rng.choice([-3, -2, -1, 1, 2, 3]))
    else:
        kind = r"\d[\d,.]*" if tok[0].isdigit() else r"[A-Z][a-z]{2,}(?: [A-Z][a-z]{2,})*"
        pool = sorted({x for x in re.findall(rf"\b{kind}\b", article) if x not in gold_text and x not in question})
        if not pool:
            return None
        new = rng.choice(pool)
    if new in gold_text:
        return None
    return question[:m.start()] + new + question[m.end():]


_ENDINGS = ("ing", "ed", "ly", "tion", "s")


def swap_word(question: str, gold_text: str, article_words: list[str], rng: random.Random) -> str | None:
    """The question with one of its content words that the gold window also has replaced by another
    word of the article that the window lacks: "What covers most of the basin of South America?" ->
    "... of Central America?". The fact asked for is then no longer the one the window states."""
    gold = set(re.findall(r"[A-Za-z]+", gold_text.lower()))
    toks = [m for m in re.finditer(r"[A-Za-z]{4,}", question)
            if m.start() > 0 and m.group(0).lower() not in _STOP and m.group(0).lower() in gold]
    if not toks:
        return None
    m = rng.choice(toks)
    tok = m.group(0)
    # Of the same shape (capitalised or not, the same ending), so that the question still reads as one.
    end = next((x for x in _ENDINGS if tok.endswith(x)), "")
    pool = [w for w in article_words if w[0].isupper() == tok[0].isupper() and w.lower() not in gold
            and w.lower() not in question.lower() and (w.endswith(end) if end else not w.endswith(_ENDINGS))]
    if not pool:
        return None
    return question[:m.start()] + rng.choice(pool) + question[m.end():]


def examples(title: str, paras: list[dict], rng: random.Random, *, swap_words: bool = False) -> list[dict]:
    out = []
    article = "\n".join(p["context"] for p in paras)
    article_words = sorted({w for w in re.findall(r"[A-Za-z]{4,}", article) if w.lower() not in _STOP})
    sents = [(p["context"], split_sentences(p["context"])) for p in paras]
    for pi, p in enumerate(paras):
        ctx, spans = sents[pi]
        wins = [window(ctx, spans, i) for i in range(len(spans))]
        for qa in p["qas"]:
            q = qa["question"]
            if qa["impossible"]:
                # The hardest sentences of their own paragraph: the ones sharing most of the question's words.
                qw = words(q)
                ranked = sorted(range(len(wins)), key=lambda i: -len(qw & words(ctx[wins[i][0]:wins[i][1]])))
                for i in ranked[:2]:
                    s, e = wins[i]
                    out.append({"q": q, "ctx": ctx[s:e], "start": -1, "answer": "", "kind": "squad2"})
                continue
            found = find(ctx, qa["answers"])
            if not found:
                continue
            a0, ans = found
            a1 = a0 + len(ans)
            holder = next((i for i, (s, e) in enumerate(spans) if s <= a0 < e), None)
            if holder is None:
                continue
            s, e = wins[holder]
            if not (s <= a0 and a1 <= e):
                continue
            out.append({"q": q, "ctx": ctx[s:e], "start": a0 - s, "answer": ans, "kind": "gold"})
            # The same answer with its sentence as a neighbour of the window's centre.
            for j in (holder - 1, holder + 1):
                if 0 <= j < len(wins) and wins[j] != wins[holder] and wins[j][0] <= a0 and a1 <= wins[j][1]:
                    js, je = wins[j]
                    out.append({"q": q, "ctx": ctx[js:je], "start": a0 - js, "answer": ans, "kind": "gold-shifted"})
                    break
            golds = [a for a in qa["answers"] if a.strip()]
            free = [w for w in set(wins) if not any(g in ctx[w[0]:w[1]] for g in golds)]
            for ws, we in rng.sample(sorted(free), min(2, len(free))):
                out.append({"q": q, "ctx": ctx[ws:we], "start": -1, "answer": "", "kind": "sibling"})
            qw = words(q)
            others = [(len(qw & words(c[w0:w1])), c[w0:w1]) for k, (c, sp) in enumerate(sents) if k != pi
                      for w0, w1 in {window(c, sp, i) for i in range(len(sp))}]
            others = [t for n, t in others if n >= 2 and not any(g in t for g in golds)]
            if others:
                out.append({"q": q, "ctx": rng.choice(others), "start": -1, "answer": "", "kind": "nearby"})
            sq = swap(q, ctx[s:e], article, rng)
            if sq:
                out.append({"q": sq, "ctx": ctx[s:e], "start": -1, "answer": "", "kind": "swap"})
            sw = swap_word(q, ctx[s:e], article_words, rng) if swap_words else None
            if sw:
                out.append({"q": sw, "ctx": ctx[s:e], "start": -1, "answer": "", "kind": "swap-word"})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--explorer", required=True, help="git dir of the rajpurkar/SQuAD-explorer snapshot")
    ap.add_argument("--squad", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/squad-dev")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    ap.add_argument("--swap-words", action="store_true", help="also the swap-word negatives (not in the shipped run)")
    args = ap.parse_args(argv)
    v11 = read_v11(args.squad)
    arts = merged(v11, read_pages(args.explorer, list(v11)))
    rng = random.Random(SEED)
    train = [x for t in sorted(arts) if t not in HELD_OUT
             for x in examples(t, arts[t], rng, swap_words=args.swap_words)]
    rng.shuffle(train)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "train.jsonl").open("w") as f:
        for x in train:
            f.write(json.dumps(x, ensure_ascii=False) + "\n")
    held = {"version": "v2.0", "data": [{"title": t, "paragraphs": [
        {"context": p["context"], "qas": [
            {"id": q["id"], "question": q["question"], "is_impossible": q["impossible"],
             "answers": [{"text": a, "answer_start": p["context"].find(a)} for a in q["answers"]
                         if p["context"].find(a) >= 0]} for q in p["qas"]]} for p in arts[t]]} for t in HELD_OUT]}
    (args.out / "heldout-squad2.json").write_text(json.dumps(held, ensure_ascii=False))
    stats = {"examples": len(train), "by_kind": dict(Counter(x["kind"] for x in train)),
             "train_articles": sorted(t for t in arts if t not in HELD_OUT), "held_out": list(HELD_OUT),
             "held_out_questions": sum(len(p["qas"]) for t in HELD_OUT for p in arts[t])}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats["by_kind"]), stats["examples"], "examples;",
          stats["held_out_questions"], "held-out questions")


if __name__ == "__main__":
    main()
