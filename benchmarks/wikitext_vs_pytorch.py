"""rnnlab against PyTorch's word_language_model recipe on WikiText-2.

Both sides train word_language_model's RNNModel, Embedding(V, E) -> dropout
-> L recurrent layers of H (a tanh RNN, an LSTM or a GRU; dropout between
layers) -> dropout -> Linear(H, V), untied, on the same token ids, and report
the held-out perplexity and the training tokens/s. ``--cell rnn|lstm|gru``
(main.py's ``--model RNN_TANH|LSTM|GRU``), ``--layers L`` and ``--dropout P``
choose the model; the default is a 1-layer tanh RNN without dropout.

Data: ``$RNNLAB_DATA_DIR/wikitext-2-valid.txt`` (default ``../shared/data``
next to the repository), read as word_language_model's ``data.py`` does
(``line.split() + ['<eos>']`` per line, a vocabulary of every token) with
``rnnlab.data.prepare_corpus(path, "tokens")``, split by tokens: the first 90%
trains, the last 10% is held out. (rnnlab numbers the vocabulary by
frequency, ``data.py`` by first appearance: a permutation of the ids, the same
for both sides here.)

The recipe, as word_language_model's ``main.py`` runs it (``--model M --emsize E
--nhid H --nlayers L --dropout P --lr X --clip 0.25 --batch_size 20 --bptt 35
--epochs 6``): training data batchified into 20 streams, chunks of 35 steps with
the hidden state (an LSTM's h and c) carried and detached, loss = mean NLL of
log-softmax, gradients clipped to global norm 0.25, plain SGD ``p -= lr * grad``;
after each epoch the held-out loss (eval batch size 10, dropout off); the
learning rate is divided by 4 when it does not improve on the best so far. The
learning rate: for the LSTM and the GRU main.py's default, 20; for the tanh RNN
5, because lr 20 makes it diverge, on both sides (``--lr 20`` shows it).
Initialisation: encoder and decoder uniform in +-0.1, decoder bias 0, the
recurrence as ``nn.RNN``/``nn.LSTM``/``nn.GRU`` do (+-1/sqrt(H));
rnnlab's ``LanguageModel(cell=..., num_layers=L, embed_size=E)`` uses the same
ranges. PyTorch starts from rnnlab's initial weights (the parameter names are
the same), so without dropout the two runs differ only by what the engines
compute; a different draw of the initial weights moves the perplexity by a few
percent here, more than any engine difference. ``--own-init`` lets PyTorch
draw its own (``torch.manual_seed``).

Dropout (inverted, on the embedding output, between layers, on the top
layer's output, as in model.py and nn.LSTM/nn.GRU) is where the sides differ
by design: each draws its own masks, PyTorch from ``torch.manual_seed(seed)``,
rnnlab from a ``np.random.Generator`` seeded from the seed and handed to every
``loss_and_grads`` call (``dropout_rng``). With dropout the two runs of one
seed are two samples of the same recipe, not the same computation, so compare
means over seeds.

The figures reported are those of main.py: the best held-out loss over the
epochs (main.py keeps the best model) and its perplexity, and the training
tokens/s (training tokens / time in the training loop, evaluation excluded).
Epochs alternate between the two sides, so a change in the machine's load
touches both. Two runs from the same weights part ways slowly as float32
rounding differs (the order of sums in two BLAS libraries), and at lr 5 the
held-out perplexity of one run moves by a few percent from that alone:
``--seeds K`` repeats the comparison from K initialisations and reports the
mean.

    python benchmarks/wikitext_vs_pytorch.py [--cell rnn|lstm|gru] [--layers L] [--dropout P]
        [--epochs N] [--quick] [--seeds K] [--hidden H] [--embed E] [--lr X] [--own-init]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout

from rnnlab import LanguageModel  # noqa: E402
from rnnlab.bench import machine_info, machine_line  # noqa: E402
from rnnlab.data import batchify, prepare_corpus, split_corpus, stream_chunks  # noqa: E402
from rnnlab.optim import clip_grad_norm, make_optimizer  # noqa: E402

CORPUS = "wikitext-2-valid.txt"
EVAL_BATCH = 10  # main.py's eval_batch_size
TORCH_NAMES = {"rnn": "RNN_TANH", "lstm": "LSTM", "gru": "GRU"}  # main.py's --model
DEFAULT_LR = {"rnn": 5.0, "lstm": 20.0, "gru": 20.0}


def data_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("RNNLAB_DATA_DIR", default))


# -- rnnlab ------------------------------------------------------------------------------


class RnnlabSide:
    name = "rnnlab"

    def __init__(self, vocab, args):
        self.model = LanguageModel(vocab, args.hidden, embed_size=args.embed, cell=args.cell,
                                   num_layers=args.layers, dropout=args.dropout, bias=True, dtype="float32",
                                   seed=args.seed)
        self.dropout_rng = np.random.default_rng([args.seed, 1])  # not the stream of the initial weights
        self.optimizer = make_optimizer("sgd", self.model.params, args.lr)
        self.args = args

    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    def train_epoch(self, batched) -> float:
        """One pass over the training streams; returns the mean training loss."""
        hidden = self.model.init_hidden(batched.shape[1])
        total, count = 0.0, 0
        for inputs, targets in stream_chunks(batched, self.args.bptt):
            loss, grads, hidden = self.model.loss_and_grads(
                inputs, targets, bptt="chunk", truncate=self.args.bptt, hidden=hidden,
                dropout_rng=self.dropout_rng)
            clip_grad_norm(grads, self.args.clip)
            self.optimizer.step(grads)
            total += loss * inputs.size
            count += inputs.size
        return total / count

    def evaluate(self, batched) -> float:
        hidden = self.model.init_hidden(batched.shape[1])
        total, count = 0.0, 0
        for inputs, targets in stream_chunks(batched, self.args.bptt):
            nll, n, hidden = self.model.evaluate(inputs, targets, hidden=hidden)
            total += nll
            count += n
        return total / count


# -- PyTorch: word_language_model's model.py and main.py, rebuilt ---------------------------


class TorchSide:
    name = "pytorch"

    def __init__(self, torch, vocab, args, init_params=None):
        nn = torch.nn
        self.torch = torch
        self.args = args
        self.lr = args.lr

        class RNNModel(nn.Module):
            """model.py's RNNModel for rnn_type RNN_TANH, LSTM or GRU, untied."""

            def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout):
                super().__init__()
                self.ntoken = ntoken
                self.drop = nn.Dropout(dropout)
                self.encoder = nn.Embedding(ntoken, ninp)
                if rnn_type in ("LSTM", "GRU"):
                    self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
                else:
                    self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity="tanh", dropout=dropout)
                self.decoder = nn.Linear(nhid, ntoken)
                self.rnn_type = rnn_type
                self.nhid = nhid
                self.nlayers = nlayers
                initrange = 0.1
                nn.init.uniform_(self.encoder.weight, -initrange, initrange)
                nn.init.zeros_(self.decoder.bias)
                nn.init.uniform_(self.decoder.weight, -initrange, initrange)

            def forward(self, input, hidden):
                emb = self.drop(self.encoder(input))
                output, hidden = self.rnn(emb, hidden)
                output = self.drop(output)
                decoded = self.decoder(output).view(-1, self.ntoken)
                return torch.nn.functional.log_softmax(decoded, dim=1), hidden

            def init_hidden(self, bsz):
                weight = self.encoder.weight
                if self.rnn_type == "LSTM":
                    return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                            weight.new_zeros(self.nlayers, bsz, self.nhid))
                return weight.new_zeros(self.nlayers, bsz, self.nhid)

        torch.manual_seed(args.seed)
        self.model = RNNModel(TORCH_NAMES[args.cell], vocab, args.embed, args.hidden, args.layers, args.dropout)
        if init_params is not None:
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    p.copy_(torch.from_numpy(init_params[name]))
        self.criterion = nn.NLLLoss()

    def _chunks(self, source):
        for i in range(0, source.size(0) - 1, self.args.bptt):  # main.py's get_batch
            seq_len = min(self.args.bptt, len(source) - 1 - i)
            yield source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)

    def train_epoch(self, batched) -> float:
        torch, model = self.torch, self.model
        source = torch.from_numpy(np.ascontiguousarray(batched, dtype=np.int64))
        model.train()
        hidden = model.init_hidden(source.size(1))
        total, count = 0.0, 0
        for data, targets in self._chunks(source):
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = self.criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.args.clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-self.lr)
            total += loss.item() * targets.numel()
            count += targets.numel()
        return total / count

    def evaluate(self, batched) -> float:
        torch, model = self.torch, self.model
        source = torch.from_numpy(np.ascontiguousarray(batched, dtype=np.int64))
        model.eval()
        total_loss = 0.0
        hidden = model.init_hidden(source.size(1))
        with torch.no_grad():
            for data, targets in self._chunks(source):
                output, hidden = model(data, hidden)
                total_loss += len(data) * self.criterion(output, targets).item()
        return total_loss / (len(source) - 1)


def repackage_hidden(h):
    """main.py's: the hidden state (a tensor, or an LSTM's tuple) cut from its history."""
    if isinstance(h, tuple):
        return tuple(repackage_hidden(v) for v in h)
    return h.detach()


# -- the comparison -------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="training epochs for each side (default 6)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 epochs on the first quarter of the training tokens")
    parser.add_argument("--cell", choices=tuple(TORCH_NAMES), default="rnn",
                        help="the recurrent cell: tanh RNN, LSTM or GRU (default rnn)")
    parser.add_argument("--layers", type=int, default=1, help="recurrent layers L (default 1)")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="dropout P on the embedding, between layers and on the top layer's output "
                             "(default 0)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size H (default 128)")
    parser.add_argument("--embed", type=int, default=None, help="embedding size E (default: H)")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--lr", type=float, default=None,
                        help="initial learning rate (default: main.py's 20 for lstm and gru, 5 for rnn: "
                             "lr 20 makes the tanh RNN diverge on both sides, see BENCHMARKS.md)")
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1111, help="main.py's default seed")
    parser.add_argument("--seeds", type=int, default=1,
                        help="repeat with seeds seed, seed+1, ... and report the mean (default 1)")
    parser.add_argument("--own-init", action="store_true",
                        help="PyTorch draws its own initial weights (default: it starts from rnnlab's)")
    parser.add_argument("--no-torch", action="store_true", help="train the rnnlab side only")
    args = parser.parse_args(argv)
    if args.embed is None:
        args.embed = args.hidden
    if args.lr is None:
        args.lr = DEFAULT_LR[args.cell]
    if args.layers < 1 or not 0.0 <= args.dropout < 1.0:
        parser.error("--layers must be at least 1 and --dropout in [0, 1)")
    if args.quick:
        args.epochs = min(args.epochs, 2)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    path = data_dir() / CORPUS
    if not path.is_file():
        print(f"wikitext_vs_pytorch: {path} not found (set RNNLAB_DATA_DIR)", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        torch = None
        if not args.no_torch:
            print("wikitext_vs_pytorch: PyTorch is not importable: install the peer extra "
                  "(pip install -e '.[peer]') or pass --no-torch", file=sys.stderr)
            return 2
    torch = None if args.no_torch else torch

    corpus = prepare_corpus(path, "tokens")
    train, held_out = split_corpus(corpus, 0.1)
    train_ids = train.ids[: len(train.ids) // 4] if args.quick else train.ids
    train_batched = np.ascontiguousarray(batchify(train_ids, args.batch_size), dtype=np.int64)
    held_out_batched = np.ascontiguousarray(batchify(held_out.ids, EVAL_BATCH), dtype=np.int64)
    vocab = len(corpus.vocab)
    train_tokens = (train_batched.shape[0] - 1) * train_batched.shape[1]  # targets per epoch

    machine = machine_info()
    threads = machine["blas"]["threads"] or os.cpu_count()
    print(machine_line(machine))
    if torch is not None:
        torch.set_num_threads(threads)
        print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"corpus: {path} ({len(corpus.ids):,} tokens, vocabulary {vocab:,}); train: first 90% "
          f"({len(train.ids):,} tokens{', of which the first quarter in --quick' if args.quick else ''}; "
          f"{train_tokens:,} targets per epoch), held out: last 10% ({len(held_out.ids):,} tokens)")
    print(f"model: Embedding({vocab}, {args.embed}) -> {TORCH_NAMES[args.cell]}({args.embed}, {args.hidden}), "
          f"{args.layers} layer{'s' if args.layers > 1 else ''} -> Linear({args.hidden}, {vocab}), "
          f"dropout {args.dropout:g}{' (each side draws its own masks)' if args.dropout else ''}, untied")
    print(f"training: batch {args.batch_size}, bptt {args.bptt} (chunk BPTT, hidden carried), plain SGD "
          f"lr {args.lr:g}, clip {args.clip:g}, {args.epochs} epochs, lr / 4 when the held-out loss does "
          f"not improve; eval batch {EVAL_BATCH}; seed {args.seed}"
          f"{f' .. {args.seed + args.seeds - 1}' if args.seeds > 1 else ''}"
          f"{', each side draws its own initial weights' if args.own_init else ', PyTorch starts from rnnlab initial weights'}")

    seeds = [args.seed + k for k in range(args.seeds)]
    runs = [compare(args, seed, torch, vocab, train_batched, held_out_batched, train_tokens) for seed in seeds]
    print()
    print("result: the best held-out loss over the epochs (main.py keeps the best model), its perplexity, "
          "and training tokens/s (training loop only)")
    for seed, run in zip(seeds, runs):
        line = "  seed %d: " % seed + " | ".join(
            f"{name} ppl {math.exp(loss):.2f}, {train_tokens * args.epochs / seconds:,.0f} tokens/s"
            for name, (loss, seconds) in run.items())
        if torch is not None:
            line += f" | rnnlab vs pytorch ppl {100 * (math.exp(run['rnnlab'][0] - run['pytorch'][0]) - 1):+.2f}%"
        print(line)
    if len(runs) > 1 or torch is not None:
        means = {name: sum(run[name][0] for run in runs) / len(runs) for name in runs[0]}
        speeds = {name: train_tokens * args.epochs * len(runs) / sum(run[name][1] for run in runs)
                  for name in runs[0]}
        print(f"  over {len(runs)} seed(s): " + " | ".join(
            f"{name} held-out perplexity {math.exp(loss):.2f} (mean loss {loss:.4f}), training "
            f"{speeds[name]:,.0f} tokens/s" for name, loss in means.items()))
        if torch is not None:
            print(f"  rnnlab vs pytorch: held-out perplexity {100 * (math.exp(means['rnnlab'] - means['pytorch']) - 1):+.2f}%, "
                  f"training speed {speeds['rnnlab'] / speeds['pytorch']:.2f}x")
    return 0


def compare(args, seed, torch, vocab, train_batched, held_out_batched, train_tokens) -> dict:
    """Train each side for ``args.epochs`` from seed ``seed``; {name: (best held-out loss, training seconds)}."""
    args = argparse.Namespace(**{**vars(args), "seed": seed})
    sides = [RnnlabSide(vocab, args)]
    if torch is not None:
        sides.append(TorchSide(torch, vocab, args, None if args.own_init else sides[0].model.params))
    best = {side.name: math.inf for side in sides}
    train_seconds = {side.name: 0.0 for side in sides}
    for epoch in range(1, args.epochs + 1):
        for side in sides:
            start = time.perf_counter()
            train_loss = side.train_epoch(train_batched)
            seconds = time.perf_counter() - start
            train_seconds[side.name] += seconds
            start = time.perf_counter()
            loss = side.evaluate(held_out_batched)
            eval_seconds = time.perf_counter() - start
            print(f"seed {seed} epoch {epoch} {side.name:8} lr {side.lr:8.4g} | train loss {train_loss:.3f} "
                  f"{train_tokens / seconds:9,.0f} tokens/s ({seconds:.1f} s) | held-out loss {loss:.3f} "
                  f"ppl {math.exp(loss):8.2f} (eval {eval_seconds:.1f} s)", flush=True)
            if loss < best[side.name]:  # main.py: keep the best model, else anneal the rate
                best[side.name] = loss
            else:
                side.lr /= 4.0
    return {name: (best[name], train_seconds[name]) for name in best}


if __name__ == "__main__":
    sys.exit(main())
