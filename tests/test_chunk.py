import pytest
from conftest import SEED

from askdesk.articles.chunk import chunk_article, count_tokens, split_sentences
from askdesk.articles.ingest import article_from_text, read_article


def sentences(text):
    return [text[s:e] for s, e in split_sentences(text)]


def test_sentence_splitting_respects_abbreviations_numbers_and_quotes():
    text = ('Japan has a surplus with the U.S. President Trump disagrees. It was $68.5 billion in 2024. '
            '"We\'re going to have tariffs… and I\'m meeting on Monday," Trump stated. Mr. Ishiba smiled!\n'
            'A new paragraph')
    assert sentences(text) == [
        "Japan has a surplus with the U.S. President Trump disagrees.",
        "It was $68.5 billion in 2024.",
        '"We\'re going to have tariffs… and I\'m meeting on Monday," Trump stated.',
        "Mr. Ishiba smiled!",
        "A new paragraph",
    ]


def test_chunks_cover_article_with_offsets_and_budget():
    a = read_article(SEED)
    chunks = chunk_article(a, max_tokens=120, overlap=30)
    assert len(chunks) > 3
    for c in chunks:
        assert a.text[c.start:c.end] == c.text and c.article_id == a.id
        assert count_tokens(c.text) <= 120
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    for s, e in split_sentences(a.text):
        assert set(range(s, e)) <= covered, "every sentence is in some chunk"
    # neighbours overlap by whole sentences, and never by more than the overlap budget
    for prev, nxt in zip(chunks, chunks[1:]):
        assert nxt.start < nxt.end and prev.start < nxt.start
        if nxt.start < prev.end:
            assert count_tokens(a.text[nxt.start:prev.end]) <= 30


def test_chunk_ids_stable_and_distinct():
    a = read_article(SEED)
    first = [c.id for c in chunk_article(a)]
    assert first == [c.id for c in chunk_article(a)]
    assert len(set(first)) == len(first)


def test_overlong_sentence_is_cut_into_token_windows():
    a = article_from_text("Start. " + "word " * 700 + "end.", title="Long")
    chunks = chunk_article(a, max_tokens=100, overlap=20)
    assert all(count_tokens(c.text) <= 100 for c in chunks)
    assert "".join(a.text[c.start:c.end] for c in chunks).replace(" ", "") .count("word") >= 690


def test_fits_splits_chunks_the_model_would_truncate():
    a = read_article(SEED)
    chunks = chunk_article(a, max_tokens=200, overlap=0, fits=lambda t: len(t.split()) <= 40)
    assert all(len(c.text.split()) <= 40 for c in chunks)
    assert all(a.text[c.start:c.end] == c.text for c in chunks)


@pytest.mark.slow
def test_no_chunk_exceeds_the_models_window():
    """Numbers, symbols and rare words cost MiniLM more wordpieces than cl100k tokens."""
    from askdesk.models.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    hard = " ".join(f"{i * 7919 % 100003:,}.{i % 97}% Zyxqvbrt-{i}ö ¥{i}" for i in range(400)) + "."
    text = read_article(SEED).text + "\n\n" + hard + "\n\n" + "Ünïcödé ẞtraße ōkami 東京 " * 200
    a = article_from_text(text, title="Adversarial")
    chunks = chunk_article(a, max_tokens=200, overlap=40, fits=lambda t: emb.fits(a.title + "\n" + t))
    tok = emb.model.tokenizer
    worst = max(len(tok(a.title + "\n" + c.text)["input_ids"]) for c in chunks)
    assert worst <= 256
