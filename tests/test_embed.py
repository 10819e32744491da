from pathlib import Path

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


@pytest.mark.parametrize("backend", ["onnx", "numpy"])
def test_question_encoder_matches_sentence_transformers(backend):
    from askdesk.models.bert import BertEncoder
    from askdesk.models.embed import SentenceTransformerEmbedder, resolve_model_path

    emb = SentenceTransformerEmbedder()
    assert isinstance(emb.fast, BertEncoder), "all-MiniLM-L6-v2 should take the torch-free path"
    assert emb.fast.backend == "onnx"  # onnxruntime is a dependency: the numpy path is only a fallback
    enc = emb.fast if backend == "onnx" else BertEncoder(resolve_model_path(emb.name), backend="numpy")
    assert enc.backend == backend
    reference = emb.embed_documents(TEXTS)
    for text, ref in zip(TEXTS, reference):
        v = enc.encode(text)
        assert v.dtype == np.float32 and v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-5
        assert float(v @ ref) > 0.99999, text[:40]


def test_without_onnxruntime_questions_fall_back_to_numpy(monkeypatch):
    """A platform without onnxruntime wheels still answers, with the same vectors."""
    import sys

    from askdesk.models.bert import BertEncoder
    from askdesk.models.embed import SentenceTransformerEmbedder, resolve_model_path

    path = resolve_model_path(SentenceTransformerEmbedder().name)
    want = BertEncoder(path).encode(TEXTS[2])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    enc = BertEncoder(path)
    assert enc.backend == "numpy" and enc.session is None
    assert float(enc.encode(TEXTS[2]) @ want) > 0.99999


def test_questions_need_no_torch():
    """The CLI's cold start: loading the question encoder and asking imports neither torch nor
    sentence-transformers (seconds of imports), in a fresh process."""
    import subprocess
    import sys

    code = ("import sys; from askdesk.models.embed import SentenceTransformerEmbedder as E; e = E(); "
            "from askdesk.models.reader import shared; r = shared(); "
            "v = e.embed_query('Who won?'); print(e.fast.backend, v.shape[0], r.session is not None, "
            "'torch' in sys.modules, 'sentence_transformers' in sys.modules, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # Nor the onnx package (~1 s of imports): the graphs are written by askdesk.models.onnx_graph.
    assert out.stdout.split() == ["onnx", "384", "True", "False", "False", "False"]


def test_onnx_messages_written_here_are_those_the_onnx_package_writes():
    """askdesk.models.onnx_graph against onnx.helper (the reference), message for message and byte for byte."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from askdesk.models import onnx_graph as g

    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    small = [("w", w), ("shape", np.array([-1, 12, 32])), ("q", np.array([[1, -2]], dtype=np.int8)),
             ("h", np.ones(3, np.float16)), ("axis", np.array(0))]
    ours = [g.tensor(n, a) for n, a in small]
    ref = [numpy_helper.from_array(a, n) for n, a in small]
    assert [TensorProto.FromString(b) for b in ours] == ref
    ext = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=w.shape, data_location=TensorProto.EXTERNAL)
    ext.external_data.add(key="location", value="askdesk-weights")
    assert TensorProto.FromString(g.external_tensor("big", w, "askdesk-weights")) == ext
    kinds = {"axis": -1, "epsilon": 1e-12, "approximate": "none", "perm": [1, 0, 2], "keepdims": 1}
    nodes = [g.node("LayerNormalization", ["x", "g"], ["y"], **kinds),
             g.node("DynamicQuantizeMatMul", ["a", "b", "s", "z"], ["c"], domain="com.microsoft")]
    ref_nodes = [helper.make_node("LayerNormalization", ["x", "g"], ["y"], **kinds),
                 helper.make_node("DynamicQuantizeMatMul", ["a", "b", "s", "z"], ["c"], domain="com.microsoft")]
    assert [onnx.NodeProto.FromString(b) for b in nodes] == ref_nodes
    ins = [g.value_info("ids", g.INT64, ["n"])]
    outs = [g.value_info("vec", g.FLOAT, [1, 384])]
    ref_ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])]
    ref_outs = [helper.make_tensor_value_info("vec", TensorProto.FLOAT, [1, 384])]
    ours_model = g.model(nodes, "m", ins, outs, ours, [("", 20), ("com.microsoft", 1)], ir_version=9)
    ref_model = helper.make_model(helper.make_graph(ref_nodes, "m", ref_ins, ref_outs, ref),
                                  opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])
    ref_model.ir_version = 9
    assert onnx.ModelProto.FromString(ours_model) == ref_model
    assert ours_model == ref_model.SerializeToString(deterministic=True)
    with pytest.raises(ValueError, match="complex"):
        g.tensor("c", np.zeros(2, np.complex64))


def test_fits_counts_wordpieces_like_the_model():
    from askdesk.models.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    tok = emb.model.tokenizer
    for text in TEXTS:
        assert emb.fits(text) == (len(tok(text)["input_ids"]) <= 256)


def test_late_pooling_matches_token_means_of_one_pass():
    """embed_spans: the text's vector is embed_documents', a span's is the mean of the token
    vectors inside it from the same pass; a span past the window is embedded on its own."""
    import torch

    from askdesk.models.embed import SentenceTransformerEmbedder, embed_with_spans

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
    from pathlib import Path

    from askdesk.models.embed import SentenceTransformerEmbedder

    # Article paragraphs, what the int8 model embeds (measured on squad passages: mean cosine 0.983).
    seed = next((Path(__file__).parents[1] / "corpus").glob("*.txt")).read_text().split("---")[-1]
    paras = [p for p in seed.split("\n\n") if len(p.split()) > 20][:6]
    fp32 = SentenceTransformerEmbedder().embed_documents(paras)
    int8 = SentenceTransformerEmbedder(quantize=True).embed_documents(paras)
    cos = (fp32 * int8).sum(1)
    assert len(paras) >= 3 and cos.min() > 0.95 and cos.mean() > 0.97, cos


def test_int8_runs_quantized_layers_and_the_manifest_says_what_ran(tmp_path, monkeypatch, caplog):
    """int8 asked for and int8 running are checked apart: if torch stops quantizing, askdesk says
    so and the index records fp32, instead of a manifest that claims int8."""
    from conftest import CORPUS

    from askdesk import Config, Desk
    from askdesk.models import embed
    from askdesk.models.embed import SentenceTransformerEmbedder, int8_layers

    emb = SentenceTransformerEmbedder(quantize=True)
    assert int8_layers(emb.model) >= 36 and emb.int8_active is True  # 6 layers x 6 Linear: all quantized
    desk = Desk.build(CORPUS, tmp_path / "ix", config=Config(index=tmp_path / "ix", int8=True), embedder=emb)
    assert desk.info()["embedder"] == {"int8": True}

    monkeypatch.setattr(embed, "_int8", lambda model: model)  # a torch whose quantization does nothing
    silent = SentenceTransformerEmbedder(quantize=True)
    with caplog.at_level("WARNING"):
        assert int8_layers(silent.model) == 0 and silent.int8_active is False
    assert "no quantized layer runs" in caplog.text
    again = Desk.build(CORPUS, tmp_path / "ix2", config=Config(index=tmp_path / "ix2", int8=True), embedder=silent)
    assert again.info()["embedder"] == {"int8": False}


def test_the_models_own_window_bounds_chunks_and_questions(tmp_path):
    """A model whose sentence_bert_config.json says 128: a 170-wordpiece chunk does not fit (it
    would be truncated), and a question and a document of the same long text get the same vector."""
    import json

    from askdesk.models.embed import SentenceTransformerEmbedder, resolve_model_path

    src = Path(resolve_model_path(SentenceTransformerEmbedder().name))
    copy = tmp_path / "minilm-128"
    copy.mkdir()
    for f in src.rglob("*"):
        if f.is_file():
            (copy / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(src)).symlink_to(f)
    (copy / "sentence_bert_config.json").unlink()
    (copy / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    emb = SentenceTransformerEmbedder(str(copy))
    assert emb.max_wordpieces == 128
    text = " ".join(f"Harbour report number {i} says the fleet grew." for i in range(17))
    n = emb.fast.n_tokens(text)
    assert 128 < n <= 256 and not emb.fits(text)
    assert float(emb.embed_query(text) @ emb.embed_documents([text])[0]) > 0.9999
