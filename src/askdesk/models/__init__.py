"""The models: the embedder seam (embed), the torch-free question encoder and the BERT graph it
and the reader share (bert), and the trained reader's runtime and weights (reader).

May import only the shared modules (config, types, errors, text, version).
"""
