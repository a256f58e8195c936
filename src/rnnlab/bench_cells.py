"""The gated cells in ``rnnlab bench``: LSTM and GRU training side by side with PyTorch.

word_language_model's recipe at its default sizes: embedding 200, hidden 200,
two layers, batch 20 x 35 steps, a vocabulary of 13,800 words (about
WikiText-2's), float32. One step is what ``rnnlab train --clip 0.25
--optimizer sgd`` takes: the forward, the gradients by chunk BPTT with the
state carried from chunk to chunk, clipping to 0.25, the SGD update. PyTorch
runs ``nn.Embedding`` + ``nn.LSTM``/``nn.GRU`` + ``nn.Linear`` loaded with
rnnlab's weights (the names are the same), ``clip_grad_norm_`` and
``optim.SGD``; both sides start from the same weights and the first-chunk
losses are reported so a reader can check they agree.

Three figures per cell, timed in alternating rounds like the tanh RNN's:

* training tokens/s, rnnlab and PyTorch;
* the roofline: every matrix product the step must make, alone, into
  preallocated outputs (the output layer's three (N, H) x (H, V)-sized
  products, each layer's input projection and its two gradients, the T
  recurrent products forward and T backward at batch B, the recurrent
  weight's gradient);
* one recurrent layer alone (input projection and recurrence, forward and
  backward): rnnlab's gates against ``nn.LSTM``/``nn.GRU``'s, where the
  per-step overhead of a small batch decides it.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

import numpy as np

from .bench import Cycle, _timed, stream_batches
from .cells import CELLS
from .gates import BiasAdd, MatMul
from .graph import Tape
from .model import LanguageModel
from .optim import SGD, clip_grad_norm
from .threads import own_threads

GATED = ("lstm", "gru")


@dataclass(frozen=True)
class GatedSettings:
    vocab: int = 13_800
    embed: int = 200
    hidden: int = 200
    layers: int = 2
    batch: int = 20
    steps: int = 35
    lr: float = 20.0
    clip: float = 0.25
    warmup: int = 2
    chunks: int = 10  # timed chunks per side per round
    rounds: int = 5
    roofline_reps: int = 5  # per round


FULL = GatedSettings()
QUICK = replace(FULL, chunks=5, rounds=3, roofline_reps=3)
TINY = replace(FULL, vocab=50, embed=6, hidden=6, batch=3, steps=4, warmup=1, chunks=2, rounds=1, roofline_reps=1)


class RnnlabGated:
    """rnnlab: loss_and_grads (chunk BPTT, state carried), clip_grad_norm, SGD."""

    def __init__(self, s: GatedSettings, cell: str):
        self.model = LanguageModel(s.vocab, s.hidden, embed_size=s.embed, cell=cell, num_layers=s.layers,
                                   dtype="float32", seed=0)
        self.optimizer = SGD(self.model.params, s.lr)
        self.hidden = self.model.init_hidden(s.batch)
        self.s = s

    def chunk(self, inputs, targets) -> float:
        loss, grads, self.hidden = self.model.loss_and_grads(inputs, targets, bptt="chunk", truncate=self.s.steps,
                                                             hidden=self.hidden)
        clip_grad_norm(grads, self.s.clip)
        self.optimizer.step(grads)
        return loss


class TorchGated:
    """PyTorch: word_language_model's RNNModel without dropout, from rnnlab's weights."""

    def __init__(self, torch, s: GatedSettings, cell: str, params: dict):
        nn = torch.nn
        self.torch, self.s = torch, s
        kind = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.modules = nn.ModuleDict({"encoder": nn.Embedding(s.vocab, s.embed),
                                      "rnn": kind(s.embed, s.hidden, s.layers),
                                      "decoder": nn.Linear(s.hidden, s.vocab)})
        self.modules.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in params.items()})
        self.optimizer = torch.optim.SGD(self.modules.parameters(), lr=s.lr)
        zeros = torch.zeros(s.layers, s.batch, s.hidden)
        self.hidden = (zeros, zeros.clone()) if cell == "lstm" else zeros

    def _detached(self):
        return tuple(h.detach() for h in self.hidden) if isinstance(self.hidden, tuple) else self.hidden.detach()

    def chunk(self, inputs, targets) -> float:
        torch, m = self.torch, self.modules
        self.optimizer.zero_grad()
        out, self.hidden = m["rnn"](m["encoder"](torch.from_numpy(inputs)), self._detached())
        logits = m["decoder"](out).view(-1, self.s.vocab)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(targets).view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), self.s.clip)
        self.optimizer.step()
        return loss.item()


def roofline_products(s: GatedSettings, cell: str) -> list:
    """Every matrix product of one training step, float32, into preallocated outputs."""
    gen = np.random.default_rng(3)
    N, B, T, H, V = s.batch * s.steps, s.batch, s.steps, s.hidden, s.vocab
    G = CELLS[cell].gates * H

    def r(*shape):
        return gen.standard_normal(shape, dtype=np.float32) * np.float32(0.1)

    def product(a, b):
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        return lambda: np.matmul(a, b, out=out)

    top, w_out, logits = r(N, H), r(V, H), r(N, V)
    products = [product(top, w_out.T), product(logits.T, top), product(logits, w_out)]
    for k in range(s.layers):
        inp = r(N, s.embed if k == 0 else H)
        w_ih, w_hh, d_pre, h_step, d_step = r(G, inp.shape[1]), r(G, H), r(N, G), r(B, H), r(B, G)
        w_hh_t = np.ascontiguousarray(w_hh.T)  # (H, G): the faster layout for the per-step product
        products += [product(inp, w_ih.T), product(d_pre, w_ih), product(d_pre.T, inp), product(d_pre.T, top)]
        products += [product(h_step, w_hh_t), product(d_step, w_hh)] * T
    return products


def one_layer_rnnlab(s: GatedSettings, cell: str):
    """A callable: one recurrent layer's forward and backward (input projection + the cell's sequence gate)."""
    gen = np.random.default_rng(4)
    spec = CELLS[cell]
    x = gen.standard_normal((s.steps * s.batch, s.embed), dtype=np.float32)
    params = {name: gen.uniform(-0.07, 0.07, shape).astype(np.float32)
              for name, shape in spec.param_shapes(0, s.embed, s.hidden, True).items()}
    state = [np.zeros((s.batch, s.hidden), dtype=np.float32) for _ in spec.state]
    d_out = gen.standard_normal((s.steps * s.batch, s.hidden), dtype=np.float32)

    def run():  # as the model runs it: rnnlab's threads own the cores (threads.own_threads)
        with own_threads():
            tape = Tape()
            nodes = {name: tape.param(value, name) for name, value in params.items()}
            pre = tape.apply(BiasAdd(), tape.apply(MatMul(), x, nodes["rnn.weight_ih_l0"]), nodes["rnn.bias_ih_l0"])
            out = tape.apply(spec.sequence(s.steps, "chunk", s.steps), pre, *state, nodes["rnn.weight_hh_l0"],
                             nodes["rnn.bias_hh_l0"])
            tape.backward(out, seed=d_out)
    return run


def one_layer_torch(torch, s: GatedSettings, cell: str):
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](s.embed, s.hidden, 1)
    x = torch.randn(s.steps, s.batch, s.embed)
    d_out = torch.randn(s.steps, s.batch, s.hidden)

    def run():
        layer.zero_grad()
        out, _ = layer(x)
        out.backward(d_out)
    return run


def _all(products):
    def run():
        for p in products:
            p()
    return run


def measure_cell(s: GatedSettings, cell: str, torch, progress) -> dict:
    """Training, roofline and one-layer figures for ``cell``, PyTorch's where it is importable."""
    batches = stream_batches(s, s.warmup + s.chunks)  # GatedSettings has vocab, steps, batch
    ours = RnnlabGated(s, cell)
    first = {"rnnlab": None, "torch": None}
    sides = {}
    if torch is not None:
        peer = TorchGated(torch, s, cell, ours.model.params)
        first["torch"] = peer.chunk(*batches[0])
        sides["torch"] = (Cycle(peer.chunk, batches), s.chunks, s.warmup)
        sides["torch_layer"] = (one_layer_torch(torch, s, cell), s.chunks, 1)
    first["rnnlab"] = ours.chunk(*batches[0])
    sides["rnnlab"] = (Cycle(ours.chunk, batches), s.chunks, s.warmup)
    sides["roofline"] = (_all(roofline_products(s, cell)), s.roofline_reps, 1)
    sides["rnnlab_layer"] = (one_layer_rnnlab(s, cell), s.chunks, 1)
    times = {name: [] for name in sides}
    for r in range(s.rounds):
        progress(f"{cell} side by side, round {r + 1}/{s.rounds}")
        for name, (fn, reps, warmup) in sides.items():
            times[name] += _timed(fn, reps, warmup)
    median = {name: statistics.median(t) for name, t in times.items()}
    tokens = s.batch * s.steps
    result = {"cell": cell, "tokens_per_chunk": tokens, "first_chunk_loss": first,
              "rnnlab_tokens_per_s": tokens / median["rnnlab"], "rnnlab_chunk_ms": 1e3 * median["rnnlab"],
              "roofline_tokens_per_s": tokens / median["roofline"], "roofline_chunk_ms": 1e3 * median["roofline"],
              "roofline_fraction": median["roofline"] / median["rnnlab"],
              "rnnlab_layer_ms": 1e3 * median["rnnlab_layer"],
              "torch_tokens_per_s": None, "torch_chunk_ms": None, "vs_torch": None, "torch_layer_ms": None,
              "layer_vs_torch": None}
    if torch is not None:
        result.update(torch_tokens_per_s=tokens / median["torch"], torch_chunk_ms=1e3 * median["torch"],
                      vs_torch=median["torch"] / median["rnnlab"], torch_layer_ms=1e3 * median["torch_layer"],
                      layer_vs_torch=median["torch_layer"] / median["rnnlab_layer"])
    return result


def measure(s: GatedSettings, torch, progress) -> dict:
    """Every gated cell in the registry: {cell: figures}."""
    return {cell: measure_cell(s, cell, torch, progress) for cell in GATED if cell in CELLS}
