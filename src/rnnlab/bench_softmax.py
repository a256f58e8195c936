"""``rnnlab bench``'s output layers: what the class-based and adaptive softmaxes buy over the full one.

Two measurements, each side by side in alternating rounds (``side_by_side``):

* **the model**: tokens/s of a training step and of evaluation for the
  full, class (``softmax="class"``) and adaptive (``softmax="adaptive"``)
  output layers, for the tanh RNN and the LSTM of ``SoftmaxSettings`` (one
  layer, embedding 200, hidden 200, float32, batch 20 x 35 steps). A training
  step is what ``rnnlab train --format tokens`` runs for each chunk, the same
  for all three layers: ``LanguageModel.clipped_sgd_step`` (forward,
  gradients by chunk BPTT, the hidden state carried, clipped to the global
  norm 0.25, then the plain SGD update; the encoder's gradient and the class
  layer's word table's kept sparse). Evaluation is ``LanguageModel.evaluate`` (forward
  only) on the same chunks, its own hidden state carried. Beside them, the
  adaptive model's step in PyTorch: ``nn.Embedding`` + ``nn.RNN``/``nn.LSTM`` +
  ``nn.AdaptiveLogSoftmaxWithLoss`` from the same weights (the first-chunk
  losses are reported so a reader can check they agree), clipping, SGD;
* **the output layer alone** as V grows: microseconds per token of the loss and
  every gradient (parameters and the hidden state) for N = 700 rows of hidden
  states (N, H = 200), full, class and adaptive, and
  ``torch.nn.AdaptiveLogSoftmaxWithLoss`` on the CPU from the same weights
  (loss, ``backward``).

Token ids: at the first vocabulary, wikitext-2-valid's own (``tokens``
format, every token, ids by frequency) when ``$RNNLAB_DATA_DIR`` holds
``wikitext-2-valid.txt``; otherwise, and at every other vocabulary, ids drawn
independently from a Zipf law over the ids, p(k) proportional to
1 / (k + 1)^``ZIPF_EXPONENT``, id 0 the most frequent: the mix of frequent
and rare targets that decides what a cut softmax costs. Such ids time the
layers; they are not text and say nothing of perplexity
(``benchmarks/softmax_quality.py`` measures that).

Classes: ``class_softmax.default_classes(V)`` (about 3 sqrt(V)) cut by
``class_cutoffs`` from the ids' counts (the corpus's, or the Zipf law's).
Adaptive cutoffs: the trainer's default for V (``adaptive_softmax.default_cutoffs``),
div_value 4, no head bias; ``--cutoffs-sweep`` times others.

This section alone, with its targets::

    python -m rnnlab.bench_softmax [--quick] [--fused] [--json] [--no-torch]
    python -m rnnlab.bench_softmax --cutoffs-sweep    # the adaptive layer alone under CUTOFF_RULES

``--fused`` times the fused ``sgd_step`` without clipping instead (PyTorch's
side then skips clipping too).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

import numpy as np

from .adaptive_softmax import default_cutoffs
from .bench import Cycle, _loadavg, _timed
from .class_softmax import class_cutoffs, default_classes
from .data.batching import batchify, stream_chunks
from .graph import Tape
from .model import LanguageModel, ModelConfig
from .threads import own_threads

ZIPF_EXPONENT = 1.05  # wikitext-2-valid's own counts fall about as rank^-0.96 over ranks 10..5000
CORPUS = "wikitext-2-valid.txt"
LAYERS = ("full", "class", "adaptive")
CUT = ("class", "adaptive")


def adaptive_cutoffs(vocab_size: int) -> tuple:
    """The adaptive layer's cutoffs timed here: the trainer's default for the vocabulary
    (``adaptive_softmax.default_cutoffs``)."""
    return tuple(int(c) for c in default_cutoffs(vocab_size))


@dataclass(frozen=True)
class SoftmaxSettings:
    vocabs: tuple = (13_800, 33_000, 100_000)  # the model's vocabularies (the first: the corpus's own, if found)
    corpus_first: bool = True  # the first vocabulary is wikitext-2-valid's when $RNNLAB_DATA_DIR holds it
    cells: tuple = ("rnn", "lstm")
    embed: int = 200
    hidden: int = 200
    batch: int = 20
    steps: int = 35
    lr: float = 0.1  # any rate times the same; 0.1 keeps the unclipped tanh RNN (``fused``) finite on these ids
    clip: float = 0.25
    fused: bool = False  # True: the fused LanguageModel.sgd_step without clipping (both sides), for every layer
    div_value: float = 4.0
    head_bias: bool = True  # the adaptive layer's head has a bias, as the trainer's default
    warmup: int = 1  # untimed chunks per side per round
    full_chunks: int = 2  # timed chunks of the full softmax per side per round
    cut_chunks: int = 6  # timed chunks of the class and adaptive layers (and PyTorch's) per side per round
    rounds: int = 5
    layer_vocabs: tuple = (10_000, 20_000, 50_000, 100_000, 200_000)  # the output layer alone
    layer_rows: int = 700  # hidden states (N, H) fed to the layer alone: one 20 x 35 chunk
    layer_reps: int = 2  # per side per round, the full softmax; the cut layers 3x as many
    target_vocab: int = 33_000  # the vocabulary of the speed-up targets


FULL = SoftmaxSettings()
QUICK = replace(FULL, vocabs=(33_000,), corpus_first=False, full_chunks=2, cut_chunks=6, rounds=2,
                layer_vocabs=(10_000, 50_000), layer_reps=1)
TINY = replace(FULL, vocabs=(300, 600), corpus_first=False, embed=16, hidden=16, batch=3, steps=4, full_chunks=1,
               cut_chunks=1, rounds=1, layer_vocabs=(300, 600), layer_rows=12, layer_reps=1, target_vocab=300)


# -- token ids --------------------------------------------------------------------------------


def zipf_probabilities(vocab_size: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    """p(k) proportional to 1 / (k + 1)^exponent for the ids k = 0..V-1, float64 (V,)."""
    weights = 1.0 / np.arange(1, vocab_size + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def zipf_ids(vocab_size: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` ids drawn independently from ``zipf_probabilities(vocab_size)``, int64."""
    return np.random.default_rng(seed).choice(vocab_size, size=count, p=zipf_probabilities(vocab_size))


def corpus_ids():
    """wikitext-2-valid's ids and counts (``tokens`` format, every token) from ``$RNNLAB_DATA_DIR``,
    or None where it is not there."""
    from .data.corpora import data_dir
    from .data.prepare import prepare_corpus
    from .errors import DataError

    try:
        folder = data_dir()
    except DataError:
        return None
    if folder is None or not (folder / CORPUS).is_file():
        return None
    corpus = prepare_corpus(folder / CORPUS, "tokens")
    return np.asarray(corpus.ids, dtype=np.int64), np.asarray(corpus.vocab.counts, dtype=np.float64)


@dataclass
class Ids:
    """The ids a vocabulary is timed on: a stream (n,), the counts that cut the classes (V,), and where
    they come from."""

    stream: np.ndarray
    counts: np.ndarray
    source: str

    @property
    def vocab_size(self) -> int:
        return self.counts.size


def zipf_stream(vocab_size: int, count: int) -> Ids:
    return Ids(zipf_ids(vocab_size, count), zipf_probabilities(vocab_size), f"Zipf ids (exponent {ZIPF_EXPONENT})")


def model_ids(s: SoftmaxSettings, index: int, corpus) -> Ids:
    """The ids of the model at ``s.vocabs[index]``: the corpus's at the first when it is there."""
    if index == 0 and s.corpus_first and corpus is not None:
        return Ids(corpus[0], corpus[1], "wikitext-2-valid's ids")
    return zipf_stream(s.vocabs[index], ((s.warmup + max(s.full_chunks, s.cut_chunks)) * s.steps + 1) * s.batch)


def chunks(ids: Ids, s: SoftmaxSettings, count: int) -> list:
    """``count`` consecutive (inputs, targets) chunks (T, B), int64, from the stream batchified
    into ``s.batch`` streams, as the trainer makes them."""
    batched = batchify(ids.stream, s.batch)
    return [(np.ascontiguousarray(x, dtype=np.int64), np.ascontiguousarray(y, dtype=np.int64))
            for x, y in list(stream_chunks(batched, s.steps))[:count]]


def layer_cutoffs(layer: str, ids: Ids) -> tuple:
    """The cutoffs of ``layer`` ("full": none) at the vocabulary of ``ids``."""
    if layer == "class":
        return class_cutoffs(ids.counts, default_classes(ids.vocab_size))
    if layer == "adaptive":
        return adaptive_cutoffs(ids.vocab_size)
    return ()


# -- timing -----------------------------------------------------------------------------------


def side_by_side(sides: dict, rounds: int, progress, label: str) -> dict:
    """Median seconds of each side {name: (fn, reps, warmup)}, the sides taking turns in each round."""
    times = {name: [] for name in sides}
    for r in range(rounds):
        progress(f"{label}, round {r + 1}/{rounds}")
        for name, (fn, reps, warmup) in sides.items():
            times[name] += _timed(fn, reps, warmup)
    return {name: statistics.median(t) for name, t in times.items()}


# -- the model ---------------------------------------------------------------------------------


class RnnlabStep:
    """One model with one output layer: a training step as the trainer takes it (clipped, or with
    ``fused`` the fused SGD step), and evaluation, each with its own carried hidden state."""

    def __init__(self, s: SoftmaxSettings, cell: str, vocab_size: int, softmax: str, cutoffs: tuple):
        self.model = LanguageModel(vocab_size, s.hidden, embed_size=s.embed, cell=cell, softmax=softmax,
                                   cutoffs=cutoffs, div_value=s.div_value, head_bias=s.head_bias and softmax == "adaptive",
                                   dtype="float32", seed=0)
        self.hidden = self.model.init_hidden(s.batch)
        self.eval_hidden = self.model.init_hidden(s.batch)
        self.s = s

    def train(self, inputs, targets) -> float:
        if self.s.fused:
            loss, self.hidden = self.model.sgd_step(inputs, targets, self.s.lr, bptt="chunk", truncate=self.s.steps,
                                                    hidden=self.hidden)
            return loss
        loss, self.hidden, _ = self.model.clipped_sgd_step(inputs, targets, self.s.lr, self.s.clip, bptt="chunk",
                                                           truncate=self.s.steps, hidden=self.hidden)
        return loss

    def evaluate(self, inputs, targets) -> float:
        nll, count, self.eval_hidden = self.model.evaluate(inputs, targets, hidden=self.eval_hidden)
        return nll / count


class TorchAdaptiveStep:
    """PyTorch: nn.Embedding + nn.RNN (tanh) or nn.LSTM + nn.AdaptiveLogSoftmaxWithLoss, clipping to
    the same norm, optim.SGD; from rnnlab's weights (the parameter names less ``decoder.`` are the
    adaptive module's state_dict keys), the hidden state detached between chunks."""

    def __init__(self, torch, s: SoftmaxSettings, cell: str, vocab_size: int, cutoffs: tuple, params: dict):
        nn = torch.nn
        self.torch, self.s = torch, s
        self.modules = nn.ModuleDict({
            "encoder": nn.Embedding(vocab_size, s.embed),
            "rnn": nn.LSTM(s.embed, s.hidden) if cell == "lstm" else nn.RNN(s.embed, s.hidden, nonlinearity="tanh"),
            "decoder": nn.AdaptiveLogSoftmaxWithLoss(s.hidden, vocab_size, list(cutoffs), div_value=s.div_value,
                                                     head_bias=s.head_bias)})
        self.modules.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in params.items()})
        self.optimizer = torch.optim.SGD(self.modules.parameters(), lr=s.lr)
        zeros = torch.zeros(1, s.batch, s.hidden)
        self.hidden = (zeros, zeros.clone()) if cell == "lstm" else zeros

    def train(self, inputs, targets) -> float:
        torch, m = self.torch, self.modules
        hidden = tuple(h.detach() for h in self.hidden) if isinstance(self.hidden, tuple) else self.hidden.detach()
        self.optimizer.zero_grad()
        out, self.hidden = m["rnn"](m["encoder"](torch.from_numpy(inputs)), hidden)
        loss = m["decoder"](out.reshape(-1, self.s.hidden), torch.from_numpy(targets).reshape(-1)).loss
        loss.backward()
        if not self.s.fused:
            torch.nn.utils.clip_grad_norm_(m.parameters(), self.s.clip)
        self.optimizer.step()
        return loss.item()


def measure_model(s: SoftmaxSettings, cell: str, ids: Ids, torch, progress) -> dict:
    """Training and evaluation tokens/s of the three layers at one vocabulary, side by side; then
    rnnlab's adaptive step and PyTorch's, side by side apart from them (PyTorch's OpenMP threads
    keep spinning after each call, which slowed the rnnlab side after it by up to a quarter)."""
    V = ids.vocab_size
    load = _loadavg()
    batches = chunks(ids, s, s.warmup + max(s.full_chunks, s.cut_chunks))
    cutoffs = {layer: layer_cutoffs(layer, ids) for layer in LAYERS}
    steps = {layer: RnnlabStep(s, cell, V, layer, cutoffs[layer]) for layer in LAYERS}
    first = {"rnnlab": None, "torch": None}
    sides, versus = {}, {}
    if torch is not None:
        peer = TorchAdaptiveStep(torch, s, cell, V, cutoffs["adaptive"], steps["adaptive"].model.params)
        first["torch"] = peer.train(*batches[0])
        versus["train torch adaptive"] = (Cycle(peer.train, batches), s.cut_chunks, s.warmup)
        versus["train rnnlab adaptive"] = (Cycle(steps["adaptive"].train, batches), s.cut_chunks, s.warmup)
    first["rnnlab"] = steps["adaptive"].train(*batches[0])
    for layer in LAYERS:
        reps = s.full_chunks if layer == "full" else s.cut_chunks
        sides[f"train {layer}"] = (Cycle(steps[layer].train, batches), reps, s.warmup)
        sides[f"eval {layer}"] = (Cycle(steps[layer].evaluate, batches), reps, s.warmup)
    median = side_by_side(sides, s.rounds, progress, f"output layers, {cell.upper()} at V={V:,}")
    if versus:
        median.update(side_by_side(versus, s.rounds, progress, f"adaptive, rnnlab and PyTorch, {cell.upper()} at V={V:,}"))
    tokens = s.batch * s.steps
    per_s = {name: tokens / seconds for name, seconds in median.items()}
    train = {layer: per_s[f"train {layer}"] for layer in LAYERS}
    evaluation = {layer: per_s[f"eval {layer}"] for layer in LAYERS}
    return {"cell": cell, "vocab": V, "ids": ids.source, "loadavg": load, "classes": len(cutoffs["class"]) + 1,
            "adaptive_cutoffs": list(cutoffs["adaptive"]),
            "train_tokens_per_s": train, "eval_tokens_per_s": evaluation,
            "train_speedup": {layer: train[layer] / train["full"] for layer in CUT},
            "eval_speedup": {layer: evaluation[layer] / evaluation["full"] for layer in CUT},
            "torch_adaptive_train_tokens_per_s": per_s.get("train torch adaptive"),
            "rnnlab_adaptive_vs_torch_tokens_per_s": per_s.get("train rnnlab adaptive"),
            "adaptive_vs_torch": (per_s["train rnnlab adaptive"] / per_s["train torch adaptive"]) if versus else None,
            "first_chunk_loss_adaptive": first}


# -- the output layer alone ----------------------------------------------------------------------


def rnnlab_layer(config: ModelConfig, hidden: np.ndarray, targets: np.ndarray, seed: int = 0):
    """(params, a callable): the output layer's loss and every gradient, parameters' and the
    hidden states' (N, H), on a tape, as the model runs it (rnnlab's threads own the cores)."""
    output = config.output_layer()
    params = output.init_params(np.random.default_rng(seed), np.float32, 0.1)
    weights = np.full(hidden.shape[0], 1.0 / hidden.shape[0], dtype=np.float32)  # the mean over the rows

    def run() -> float:
        with own_threads():
            tape = Tape()
            nodes = {name: tape.param(value, name) for name, value in params.items()}
            loss = output.loss(tape, tape.param(hidden, "hidden"), nodes, targets, weights)
            tape.backward(loss)
        return float(loss.value)
    return params, run


def torch_adaptive_layer(torch, config: ModelConfig, params: dict, hidden: np.ndarray, targets: np.ndarray):
    """A callable: ``nn.AdaptiveLogSoftmaxWithLoss`` from rnnlab's weights, loss and ``backward``
    (the parameters' gradients and the hidden states')."""
    module = torch.nn.AdaptiveLogSoftmaxWithLoss(config.hidden_size, config.vocab_size, list(config.cutoffs),
                                                 div_value=config.div_value, head_bias=config.head_bias)
    module.load_state_dict({name[len("decoder."):]: torch.from_numpy(value.copy()) for name, value in params.items()})
    h = torch.from_numpy(hidden.copy()).requires_grad_()
    y = torch.from_numpy(targets)

    def run() -> float:
        module.zero_grad()
        h.grad = None
        loss = module(h, y).loss
        loss.backward()
        return loss.item()
    return run


def measure_layer(s: SoftmaxSettings, vocab_size: int, torch, progress) -> dict:
    """Microseconds per token of the output layer alone (forward and backward), N rows of Zipf targets:
    the three layers side by side, then rnnlab's adaptive layer and PyTorch's apart from them (as
    ``measure_model``)."""
    load = _loadavg()
    gen = np.random.default_rng(5)
    hidden = np.tanh(gen.standard_normal((s.layer_rows, s.hidden))).astype(np.float32)
    ids = zipf_stream(vocab_size, s.layer_rows)
    targets = ids.stream
    sides, versus, losses = {}, {}, {}
    for layer in LAYERS:
        config = ModelConfig(vocab_size, s.hidden, s.embed, softmax=layer, cutoffs=layer_cutoffs(layer, ids),
                             div_value=s.div_value, head_bias=s.head_bias and layer == "adaptive")
        params, run = rnnlab_layer(config, hidden, targets)
        reps = s.layer_reps if layer == "full" else 3 * s.layer_reps
        sides[layer] = (run, reps, 1)
        if layer == "adaptive" and torch is not None:
            peer = torch_adaptive_layer(torch, config, params, hidden, targets)
            losses = {"rnnlab": run(), "torch": peer()}
            versus = {"torch adaptive": (peer, reps, 1), "rnnlab adaptive": (run, reps, 1)}
    median = side_by_side(sides, s.rounds, progress, f"the output layer alone at V={vocab_size:,}")
    if versus:
        median.update(side_by_side(versus, s.rounds, progress, f"the adaptive layer, rnnlab and PyTorch, V={vocab_size:,}"))
    us = {name: 1e6 * seconds / s.layer_rows for name, seconds in median.items()}
    return {"vocab": vocab_size, "loadavg": load, "classes": default_classes(vocab_size),
            "adaptive_cutoffs": list(adaptive_cutoffs(vocab_size)),
            "us_per_token": {layer: us[layer] for layer in LAYERS},
            "torch_adaptive_us_per_token": us.get("torch adaptive"),
            "rnnlab_adaptive_vs_torch_us_per_token": us.get("rnnlab adaptive"),
            "adaptive_vs_torch": (us["torch adaptive"] / us["rnnlab adaptive"]) if versus else None,
            "loss_adaptive": losses or None}


def geometric_cutoffs(vocab_size: int, shortlist: int = 2000, growth: int = 5, clusters: int = 3) -> tuple:
    """A shortlist of min(``shortlist``, V/20) ids, then clusters each ``growth`` times as far out
    (2000, 10000, 50000 for a large V), at most ``clusters`` of them, those below V."""
    first = max(1, min(shortlist, vocab_size // 20))
    return tuple(c for c in (first * growth ** i for i in range(clusters)) if c < vocab_size)


# Adaptive cutoffs compared by ``--cutoffs-sweep``: V -> cut points (those not below V are dropped).
CUTOFF_RULES = {
    "default": default_cutoffs,
    "2k,10k": lambda V: (2000, 10000),
    "1k,5k,25k": lambda V: (1000, 5000, 25000),
    "2k,10k,50k": lambda V: (2000, 10000, 50000),
    "min(2k,V/20)x5": geometric_cutoffs,
}


def measure_cutoffs(s: SoftmaxSettings, vocabs, progress) -> list:
    """The adaptive layer alone (as ``measure_layer``) under each of ``CUTOFF_RULES``, side by side:
    [{vocab, us_per_token: {rule: microseconds}, cutoffs: {rule: cut points}, shortlist_mass: {rule: share}}]."""
    rows = []
    gen = np.random.default_rng(5)
    hidden = np.tanh(gen.standard_normal((s.layer_rows, s.hidden))).astype(np.float32)
    for V in vocabs:
        ids = zipf_stream(V, s.layer_rows)
        mass = np.cumsum(ids.counts)
        sides, cuts = {}, {}
        for name, rule in CUTOFF_RULES.items():
            cuts[name] = tuple(c for c in rule(V) if 0 < c < V)
            if not cuts[name]:
                continue
            config = ModelConfig(V, s.hidden, s.embed, softmax="adaptive", cutoffs=cuts[name], div_value=s.div_value,
                                 head_bias=s.head_bias)
            sides[name] = (rnnlab_layer(config, hidden, ids.stream)[1], 5 * s.layer_reps, 1)
        load = _loadavg()
        median = side_by_side(sides, s.rounds, progress, f"adaptive cutoffs at V={V:,}")
        rows.append({"vocab": V, "loadavg": load, "cutoffs": {k: list(c) for k, c in cuts.items()},
                     "us_per_token": {k: 1e6 * m / s.layer_rows for k, m in median.items()},
                     "shortlist_mass": {k: float(mass[c[0] - 1]) for k, c in cuts.items() if c}})
    return rows


def measure(s: SoftmaxSettings, torch, progress) -> dict:
    """Every figure of the section: the models at ``s.vocabs`` for each cell, then the layer alone."""
    load_start = _loadavg()
    corpus = corpus_ids() if s.corpus_first else None
    models = []
    for index in range(len(s.vocabs)):
        ids = model_ids(s, index, corpus)
        for cell in s.cells:
            models.append(measure_model(s, cell, ids, torch, progress))
    layer = [measure_layer(s, V, torch, progress) for V in s.layer_vocabs]
    return {"models": models, "layer": layer, "zipf_exponent": ZIPF_EXPONENT,
            "loadavg_start": load_start, "loadavg_end": _loadavg(),
            "step": step_text(s)}


def step_text(s: SoftmaxSettings) -> str:
    """What a timed training step is."""
    if s.fused:
        return (f"the fused sgd_step (chunk BPTT, the output layer and the encoder's rows stepped in place), "
                f"lr {s.lr:g}, no clipping, as rnnlab train takes plain SGD without clipping; every layer alike")
    return (f"clipped_sgd_step (chunk BPTT, clip to {s.clip:g}, SGD at lr {s.lr:g}, sparse where the gradients "
            f"are), as rnnlab train takes plain SGD with clipping (the tokens recipe); every layer alike")


# -- targets and report ----------------------------------------------------------------------------

TRAIN_SPEEDUP = 8.0
EVAL_SPEEDUP = 5.0
CELLS = ("rnn", "lstm")  # the cells the targets name, in the order they are reported


def _at(results: dict, cell: str, vocab: int):
    for m in results["models"]:
        if m["cell"] == cell and m["vocab"] == vocab:
            return m
    return None


def targets(results: dict | None, s: dict) -> list:
    """The section's targets, as rows {name, value, target, pass} (pass None where not measured):
    for each cell and cut layer, its training and evaluation tokens/s at ``s["target_vocab"]`` over
    the full softmax's, and whether the training speed-up grows from there to the largest
    vocabulary measured, where there is a larger one (the value: the ratio of the two speed-ups)."""
    rows = []
    target_vocab, largest = s["target_vocab"], max(s["vocabs"])

    def add(name, value, target, passed):
        rows.append({"name": name, "value": value, "target": target, "pass": passed})

    for cell in CELLS:
        at_target = None if results is None else _at(results, cell, target_vocab)
        at_largest = None if results is None or largest == target_vocab else _at(results, cell, largest)
        for layer in CUT:
            for kind, bound in (("train", TRAIN_SPEEDUP), ("eval", EVAL_SPEEDUP)):
                value = at_target and at_target[f"{kind}_speedup"][layer]
                add(f"{cell.upper()} {layer} vs full softmax, {kind}, {_k(target_vocab)}", value, f">= {bound:g}x",
                    None if value is None else value >= bound)
            if largest > target_vocab:
                grows = None
                if at_target and at_largest:
                    grows = at_largest["train_speedup"][layer] / at_target["train_speedup"][layer]
                add(f"{cell.upper()} {layer} train speed-up, {_k(largest)} / {_k(target_vocab)}", grows, "> 1",
                    None if grows is None else grows > 1)
    return rows


def _k(vocab: int) -> str:
    return f"{vocab // 1000}k" if vocab >= 1000 else str(vocab)


def _rate(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(results: dict, s: dict) -> list:
    """The section's lines for ``bench.render``."""
    lines = ["", f"output layers: full, class (about 3 sqrt(V) classes, cut by frequency), adaptive (div_value "
             f"{s['div_value']:g}, {'a' if s['head_bias'] else 'no'} head bias); embedding {s['embed']}, one layer of {s['hidden']}, float32, "
             f"batch {s['batch']} x {s['steps']}",
             f"  training step: {results['step']}; evaluation: LanguageModel.evaluate (forward only)",
             f"  ids: wikitext-2-valid's where named, else Zipf-distributed (exponent {results['zipf_exponent']}), "
             f"for timing only; load average {results['loadavg_start']} / {results['loadavg_end']} "
             f"before / after this section (and at the start of each row)",
             f"  {'':33} {'training tokens/s':^26}  {'x full':^13}  {'evaluation tokens/s':^26}  {'x full':^13}",
             f"  {'model':16} {'ids':16} {'full':>8} {'class':>8} {'adaptive':>8}  {'class':>5} {'adapt.':>7}  "
             f"{'full':>8} {'class':>8} {'adaptive':>8}  {'class':>5} {'adapt.':>7} {'load':>5}"]
    for m in results["models"]:
        t, e = m["train_tokens_per_s"], m["eval_tokens_per_s"]
        lines.append(f"  {m['cell'].upper() + ', V=' + format(m['vocab'], ','):16} "
                     f"{'wikitext-2-valid' if m['ids'].startswith('wikitext') else 'Zipf':16} "
                     + " ".join(f"{_rate(t[k]):>8}" for k in LAYERS) + "  "
                     f"{_ratio(m['train_speedup']['class']):>5} {_ratio(m['train_speedup']['adaptive']):>7}  "
                     + " ".join(f"{_rate(e[k]):>8}" for k in LAYERS) + "  "
                     f"{_ratio(m['eval_speedup']['class']):>5} {_ratio(m['eval_speedup']['adaptive']):>7} "
                     f"{m['loadavg']:>5}")
    lines.append(f"  {'adaptive training, rnnlab / PyTorch':50} {'rnnlab':>8} {'PyTorch':>8} {'ratio':>6}  "
                 f"first-chunk loss, rnnlab / PyTorch; classes; adaptive cutoffs")
    for m in results["models"]:
        first = m["first_chunk_loss_adaptive"]
        torch_loss = "-" if first["torch"] is None else f"{first['torch']:.4f}"
        ratio = "-" if m["adaptive_vs_torch"] is None else f"{m['adaptive_vs_torch']:.2f}x"
        lines.append(f"  {m['cell'].upper() + ', V=' + format(m['vocab'], ','):50} "
                     f"{_rate(m['rnnlab_adaptive_vs_torch_tokens_per_s'] or m['train_tokens_per_s']['adaptive']):>8} "
                     f"{_rate(m['torch_adaptive_train_tokens_per_s']):>8} "
                     f"{ratio:>6}  {first['rnnlab']:.4f} / {torch_loss}; {m['classes']}; "
                     f"{','.join(map(str, m['adaptive_cutoffs']))}")
    lines.append(f"  the output layer alone: {s['layer_rows']} rows (N, {s['hidden']}) of Zipf targets -> loss, "
                 f"then every gradient (parameters', the rows'); microseconds per token")
    lines.append(f"  {'V':>9} {'full':>9} {'class':>9} {'adaptive':>9} {'PyTorch adaptive':>17} "
                 f"{'rnnlab vs PyTorch':>18} {'load':>5}  classes; adaptive cutoffs")
    for row in results["layer"]:
        us = row["us_per_token"]
        peer = row["torch_adaptive_us_per_token"]
        lines.append(f"  {row['vocab']:>9,} {us['full']:>9.2f} {us['class']:>9.2f} {us['adaptive']:>9.2f} "
                     f"{'-' if peer is None else format(peer, '.2f'):>17} "
                     f"{'-' if row['adaptive_vs_torch'] is None else format(row['adaptive_vs_torch'], '.2f') + 'x':>18}"
                     f" {row['loadavg']:>5}  {row['classes']}; {','.join(map(str, row['adaptive_cutoffs']))}")
    return lines


def main(argv=None) -> int:
    """``python -m rnnlab.bench_softmax [--quick] [--json] [--no-torch]``: this section alone, with the
    machine it ran on and its targets (``rnnlab bench`` runs it among the others)."""
    import argparse
    import json
    import os
    import sys
    from dataclasses import asdict

    from .bench import _import_torch, env_text, machine_info, machine_line

    parser = argparse.ArgumentParser(prog="python -m rnnlab.bench_softmax",
                                     description="The output layers' speed, side by side "
                                                 "(rnnlab bench's softmax section).")
    parser.add_argument("--quick", action="store_true", help="the 33k-word LSTM and two layer sizes only")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch's adaptive softmax")
    parser.add_argument("--fused", action="store_true",
                        help="time the fused sgd_step without clipping instead of the clipped step")
    parser.add_argument("--cutoffs-sweep", action="store_true",
                        help="only the adaptive layer alone under several cutoff rules, V = 13.8k to 200k")
    args = parser.parse_args(argv)
    s = replace(QUICK if args.quick else FULL, fused=args.fused)
    progress = lambda message: print(f"[bench] {message} ...", file=sys.stderr, flush=True)  # noqa: E731
    if args.cutoffs_sweep:
        machine = machine_info()
        rows = measure_cutoffs(s, (13_800, 33_000, 100_000, 200_000), progress)
        print(machine_line(machine))
        print(f"the adaptive layer alone, {s.layer_rows} rows (N, {s.hidden}) of Zipf targets (exponent "
              f"{ZIPF_EXPONENT}), div_value {s.div_value:g}: loss and every gradient, microseconds per token; "
              f"in brackets the Zipf mass of the shortlist")
        print(f"{'V':>9} " + " ".join(f"{name:>17}" for name in CUTOFF_RULES) + "  load")
        for row in rows:
            print(f"{row['vocab']:>9,} " + " ".join(
                f"{row['us_per_token'][k]:>9.1f} ({row['shortlist_mass'][k]:.2f})" if k in row["us_per_token"]
                else f"{'-':>17}" for k in CUTOFF_RULES) + f"  {row['loadavg']}")
            print(f"{'':9} " + " ".join(f"{','.join(map(str, row['cutoffs'][k])):>17}" for k in CUTOFF_RULES))
        return 0
    torch = None if args.no_torch else _import_torch()
    machine = machine_info()
    if torch is not None:
        torch.set_num_threads(machine["blas"]["threads"] or os.cpu_count())
        torch.manual_seed(0)
    results = measure(s, torch, progress)
    settings = asdict(s)
    rows = targets(results, settings)
    if args.json:
        print(json.dumps({"machine": machine, "torch": None if torch is None else torch.__version__,
                          "settings": settings, "softmax": results, "targets": rows}, indent=2))
        return 0
    blas = machine["blas"]
    peer = "-" if torch is None else f"{torch.__version__}, {torch.get_num_threads()} threads"
    print(f"output layers ({'quick' if args.quick else 'full'}): {machine['nproc']} cores, {machine['cpu']}; "
          f"numpy {machine['numpy']}, BLAS {blas['library']} {blas['version']} ({blas['threads']} threads, "
          f"via {blas['source']}); PyTorch {peer}")
    print(f"  {env_text(machine['env'])}")
    print("\n".join(render(results, settings)[1:]))
    print()
    for row in rows:
        verdict = "n/a" if row["pass"] is None else ("PASS" if row["pass"] else "FAIL")
        shown = "-" if row["value"] is None else f"{row['value']:.3g}"
        print(f"{row['name']:44} {shown:>10} {row['target']:>10}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
