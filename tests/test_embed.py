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


def test_late_pooling_matches_token_means_of_one_pass():
    """embed_spans: the text's vector is embed_documents', a span's is the mean of the token
    vectors inside it from the same pass; a span past the window is embedded on its own."""
    import torch

    from askdesk.embed import SentenceTransformerEmbedder, embed_with_spans

    emb = SentenceTransformerEmbedder()
    text = TEXTS[2] + " " + TEXTS[0]
    second = (len(TEXTS[2]) + 1, len(text))
    long_text = "word " * 400 + "Tokyo welcomed the plan."
    cut = (long_text.index("Tokyo"), len(long_text))  # beyond 256 wordpieces: truncated away
    vecs, spans, n = embed_with_spans(emb, [text, long_text], [[(0, len(TEXTS[2])), second], [cut]])
    assert n == 3  # two texts, and the one span the window cut off
    np.testing.assert_allclose(vecs, emb.embed_documents([text, long_text]), atol=2e-5)

    enc = emb.model.tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].numpy()
    with torch.inference_mode():
        tokens = emb.model(dict(enc))["token_embeddings"][0].numpy()
    for (s, e), got in zip([(0, len(TEXTS[2])), second], spans[0]):
        inside = (offsets[:, 1] > offsets[:, 0]) & (offsets[:, 0] >= s) & (offsets[:, 1] <= e)
        want = tokens[inside].mean(0)
        assert float(got @ (want / np.linalg.norm(want))) > 0.9999
    assert float(spans[0][1] @ emb.embed_documents([TEXTS[0]])[0]) < 0.99  # read in context, not alone
    assert float(spans[1][0] @ emb.embed_documents([long_text[cut[0]:]])[0]) > 0.9999


def test_int8_document_vectors_stay_close_to_fp32():
    from askdesk.embed import SentenceTransformerEmbedder

    from pathlib import Path

    # Article paragraphs, what the int8 model embeds (measured on squad passages: mean cosine 0.983).
    seed = next((Path(__file__).parents[1] / "corpus").glob("*.txt")).read_text().split("---")[-1]
    paras = [p for p in seed.split("\n\n") if len(p.split()) > 20][:6]
    fp32 = SentenceTransformerEmbedder().embed_documents(paras)
    int8 = SentenceTransformerEmbedder(quantize=True).embed_documents(paras)
    cos = (fp32 * int8).sum(1)
    assert len(paras) >= 3 and cos.min() > 0.95 and cos.mean() > 0.97, cos


def test_server_question_encoder_switches_to_torch_with_the_same_vectors():
    import torch

    from askdesk.embed import SentenceTransformerEmbedder

    threads = torch.get_num_threads()
    try:
        emb = SentenceTransformerEmbedder(quantize=True)
        numpy_vecs = [emb.embed_query(t) for t in TEXTS[:3]]
        assert emb._question_model is None and emb._model is None  # numpy so far, torch not loaded
        emb.serve_questions_with_torch().join(timeout=120)
        assert emb._question_model is not None
        for text, ref in zip(TEXTS[:3], numpy_vecs):
            assert float(emb.embed_query(text) @ ref) > 0.99999, text  # fp32, not the int8 article model
        assert torch.get_num_threads() == 1  # the asking thread encodes on one thread
        assert emb._model is None  # the int8 article model is only loaded when articles are embedded
    finally:
        torch.set_num_threads(threads)
