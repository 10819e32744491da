import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEXTS = [
    "How big was Nippon Steel's bid for US Steel?",
    "a",
    "Japan's 2024 goods trade surplus was $68.5 billion, said the U.S. Census Bureau on 7 Feb.",
    "Ünïcödé ẞtraße ōkami 東京 — “quoted” text… with symbols ¥€£ 12,345.67%",
    "word " * 400,  # longer than the window: truncated the same way on both paths
]


def test_numpy_question_encoder_matches_sentence_transformers():
    from askdesk.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    assert emb.fast is not None, "all-MiniLM-L6-v2 should take the numpy path"
    reference = emb.embed_documents(TEXTS)
    for text, ref in zip(TEXTS, reference):
        v = emb.embed_query(text)
        assert v.dtype == np.float32 and abs(np.linalg.norm(v) - 1) < 1e-5
        assert float(v @ ref) > 0.99999, text[:40]


def test_fits_counts_wordpieces_like_the_model():
    from askdesk.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    tok = emb.model.tokenizer
    for text in TEXTS:
        assert emb.fits(text) == (len(tok(text)["input_ids"]) <= 256)
