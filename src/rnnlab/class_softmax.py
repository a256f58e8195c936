"""The class-based output layer (Mikolov et al. 2011, "Extensions of recurrent neural network
language model"), and how its classes are cut from the vocabulary's counts.

    p(w | h) = p(class(w) | h) * p(w | class(w), h)

Both factors are softmaxes: over the C classes, and over the words of one
class only. The classes are contiguous ranges of ids, [0, c1), [c1, c2), ...,
[c_last, V); with rnnlab's vocabulary (specials, then words most frequent
first, the unknown token last) ``class_cutoffs`` puts the frequent words in
small classes. Training makes C + (the size of the target's class) logits per
row instead of V.
"""
from __future__ import annotations

import math

import numpy as np

from .output import OutputLayer
from .two_level import Layout, TwoLevelSoftmaxCE, check_cutoffs, init_uniform, log_probs, nll_rows

MASSES = ("frequency", "sqrt")


def default_classes(vocab_size) -> int:
    """About 3 sqrt(V) classes; at least 2 where V allows.

    sqrt(V), the paper's choice, makes C + V / C smallest for classes of equal
    size; more classes cost little in time (an LSTM's clipped step at V = 33k
    took 35 ms with 182, 363 or 545 classes, the tail's smaller classes
    paying for the larger head) and much less in perplexity: on
    wikitext-2-valid (V = 13,777, 3 epochs, 3 seeds) 117 classes were 18.7%
    behind the full softmax, 350 classes 3.1% (``benchmarks/softmax_quality.py``).
    """
    return min(vocab_size, max(2, round(3 * math.sqrt(vocab_size))))


def class_cutoffs(counts, n_classes, mass="sqrt") -> tuple:
    """Cut points (c1, ..., c_{C-1}) for C classes from the counts of ids 0..V-1, in id order.

    Frequency binning: walking the ids in order, class k takes the words
    whose share of the mass lies in [k/C, (k+1)/C), a word counting where the
    middle of its mass falls, so each cut lands on the word boundary nearest
    to k/C. With words most frequent first, the first classes are small. A
    word heavier than 1/C still makes a class of its own, and a class that
    would be empty takes the next word, as in the RNNLM toolkit (which closes
    a class with the word that crosses k/C rather than at the nearest
    boundary: the same cuts up to one word).

    ``mass``: what is binned. ``"frequency"``, the counts, is the paper's
    rule (Mikolov et al. 2011: class 1 holds the words of the first 1/C of
    the unigram distribution). ``"sqrt"``, the counts' square roots, is the
    RNNLM toolkit's default (``-old-classes`` selects the paper's rule, which
    its help calls slower and a little more precise); it is the default here
    too: its classes are more even (at V = 33k, C = 182 on Zipf counts: at
    most 360 words and no class of one word, against 1,932 words and 82 classes
    of one word), a training step of the layer ran about 20% faster, and its
    rows touch a third less of the word table per batch.

    ``ValueError`` for more classes than words, fewer than 1, negative counts,
    counts that are all 0, or an unknown ``mass``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    V = counts.size
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"the number of classes must be a positive integer, not {n_classes!r}")
    if n_classes > V:
        raise ValueError(f"{n_classes} classes for {V} words: every class needs at least one word")
    if mass not in MASSES:
        raise ValueError(f"mass must be one of {', '.join(MASSES)}, not {mass!r}")
    if counts.ndim != 1 or (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("counts must be a list of finite counts >= 0, one per id")
    weights = counts if mass == "frequency" else np.sqrt(counts)
    total = weights.sum()
    if total <= 0:
        raise ValueError("the counts are all 0: there is no mass to cut into classes")
    ends = np.cumsum(weights) / total
    middles = ends - weights / (2 * total)
    k = np.arange(1, n_classes)
    cuts = np.searchsorted(middles, k / n_classes, side="left")  # ids whose middle lies below k / C
    # c_k - k must not fall (no class empty) and must lie in 0..V - C (none empty at either end)
    cuts = k + np.minimum(np.maximum.accumulate(np.maximum(cuts - k, 0)), V - n_classes)
    return tuple(int(c) for c in cuts)


class ClassSoftmax(OutputLayer):
    """p(w | h) = p(class(w) | h) p(w | class(w), h), classes cut at ``cutoffs``.

    Parameters: ``decoder.weight`` (V, H) and, with ``bias``, ``decoder.bias``
    (V,) for the words, named as the full softmax's (row i is id i's vector;
    the softmax within a class reads the rows of its ids); ``class_decoder.weight``
    (C, H) and, with ``bias``, ``class_decoder.bias`` (C,) for the classes.
    With ``tied_to`` (``"encoder.weight"``) the words' weight is that
    parameter, as the full softmax's. Training runs the fused
    ``two_level.TwoLevelSoftmaxCE`` with no shortlist; its SGD step inside the
    forward (``fused_sgd``) moves only the words of the batch's target classes.
    """

    fused_sgd = True
    tieable = True

    def __init__(self, vocab_size, hidden_size, cutoffs, bias=True, tied_to=None):
        self.cutoffs = check_cutoffs(cutoffs, vocab_size, "class")
        self.vocab_size, self.hidden_size, self.bias = vocab_size, hidden_size, bias
        self.weight = tied_to or "decoder.weight"
        self.layout = Layout((0, *self.cutoffs, vocab_size), projected=False)

    @property
    def num_classes(self) -> int:
        return len(self.cutoffs) + 1

    @classmethod
    def from_config(cls, config) -> "ClassSoftmax":
        if config.head_bias:
            raise ValueError("head_bias belongs to the adaptive output layer; the class layer's "
                             "class bias follows bias")
        return cls(config.vocab_size, config.hidden_size, config.cutoffs, config.bias,
                   tied_to="encoder.weight" if config.tied else None)

    def param_shapes(self) -> dict:
        V, H, C = self.vocab_size, self.hidden_size, self.num_classes
        shapes = {"decoder.weight": (V, H)} if self.weight == "decoder.weight" else {}
        if self.bias:
            shapes["decoder.bias"] = (V,)
        shapes["class_decoder.weight"] = (C, H)
        if self.bias:
            shapes["class_decoder.bias"] = (C,)
        return shapes

    def init_params(self, gen, dtype, bound) -> dict:
        """Weights uniform in [-bound, bound], drawn in ``param_shapes`` order; biases at zero."""
        return init_uniform(self.param_shapes(), gen, dtype, bound)

    def _tail(self, params):
        return params[self.weight], params.get("decoder.bias")

    def loss(self, tape, hidden, nodes, targets, weights, sgd_lr=None, sparse=False):
        return tape.apply(TwoLevelSoftmaxCE(self.layout, sgd_lr, sparse), hidden, nodes["class_decoder.weight"],
                          nodes.get("class_decoder.bias"), targets, weights, *self._tail(nodes))

    def nll(self, params, hidden, targets):
        return nll_rows(self.layout, hidden, params["class_decoder.weight"], params.get("class_decoder.bias"),
                        self._tail(params), targets)

    def log_probs(self, params, hidden):
        return log_probs(self.layout, hidden, params["class_decoder.weight"], params.get("class_decoder.bias"),
                         self._tail(params))
