"""The adaptive output layer: ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (Grave et al. 2017,
"Efficient softmax approximation for GPUs"), the same function of the same weights.

The ids [0, c1) are the shortlist, each an entry of the head; the rest are
cut into clusters [c1, c2), ..., [c_last, V), each one more head entry. A
cluster's words live in a narrower space: cluster i projects the hidden state
to H // div_value^(i+1) entries (as torch computes it) and its words' vectors
have that many entries. Parameters, named so that the names less
``decoder.`` are the torch module's ``state_dict`` keys (``module_state``,
``from_module_state``)::

    decoder.head.weight        (c1 + clusters, H)
    decoder.head.bias          (c1 + clusters,)      with head_bias
    decoder.tail.{i}.0.weight  (width_i, H)          cluster i's projection
    decoder.tail.{i}.1.weight  (cluster size, width_i)  its words

No tail has a bias. The layer cannot be tied to the encoder: its words'
vectors are not one (V, H) table (the tail's live in the narrower spaces).
"""
from __future__ import annotations

import math
from numbers import Real

from .output import OutputLayer
from .two_level import Layout, TwoLevelSoftmaxCE, check_cutoffs, init_uniform, log_probs, nll_rows

PREFIX = "decoder."
SHORTLIST = 2000  # the head's words by default: at most a quarter of the vocabulary
GROWTH = 5  # by default the first cluster reaches this many times as far as the shortlist


def default_cutoffs(vocab_size) -> tuple:
    """The trainer's cut points when none are given: the 2,000 most frequent ids in the head (a
    quarter of a vocabulary under 8,000), the next ones up to 5 times as many in the first
    cluster, the rest in the second: 2000, 10000 for any V above 10,000 (at least 2 ids per
    part; a vocabulary too small for that gets one cluster).

    On wikitext-2-valid (V = 13,777; an LSTM of 200, 3 epochs, 3 seeds, a head bias, lr 10)
    these cost 3.9-4.6% of perplexity against the full softmax, the earlier 5% and 25% of V
    (689, 3444) 7.3% (``benchmarks/softmax_quality.py``, BENCHMARKS.md).
    """
    head = max(2, min(SHORTLIST, vocab_size // 4))
    first = max(head + 2, head * GROWTH)
    return tuple(c for c in (head, first) if c < vocab_size)[:2] or (max(1, vocab_size - 1),)


def projection_widths(hidden_size, n_clusters, div_value) -> tuple:
    """Cluster i's projection width, ``int(H // div_value ** (i + 1))`` as torch computes it;
    ``ValueError`` for a div_value that is not a positive number or a width that comes to 0."""
    if isinstance(div_value, bool) or not isinstance(div_value, Real) or not (
            math.isfinite(div_value) and div_value > 0):
        raise ValueError(f"div_value must be a positive number, not {div_value!r}")
    widths = tuple(int(hidden_size // (div_value ** (i + 1))) for i in range(n_clusters))
    for i, width in enumerate(widths):
        if width < 1:
            raise ValueError(f"cluster {i}'s projection width {hidden_size} // {div_value}^{i + 1} is 0: "
                             "use a smaller div_value or fewer cutoffs")
    return widths


class AdaptiveSoftmax(OutputLayer):
    """``torch.nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs, div_value, head_bias)`` as an output layer.

    Parameters as in the module docstring; ``bias`` does not apply (torch's
    layer has a head bias with ``head_bias`` and no other). Not tieable: the
    tail's word vectors live in spaces narrower than H. Training runs the
    fused ``two_level.TwoLevelSoftmaxCE``, which can take the SGD step inside
    its forward (``fused_sgd``).
    """

    fused_sgd = True
    tieable = False
    untied_because = "its tail's word vectors live in spaces narrower than the hidden size"

    def __init__(self, vocab_size, hidden_size, cutoffs, div_value=4.0, head_bias=False):
        self.cutoffs = check_cutoffs(cutoffs, vocab_size, "adaptive")
        self.vocab_size, self.hidden_size, self.head_bias = vocab_size, hidden_size, head_bias
        self.widths = projection_widths(hidden_size, len(self.cutoffs), div_value)
        self.layout = Layout((*self.cutoffs, vocab_size), projected=True)

    @classmethod
    def from_config(cls, config) -> "AdaptiveSoftmax":
        return cls(config.vocab_size, config.hidden_size, config.cutoffs, config.div_value, config.head_bias)

    def tail_names(self) -> list:
        """The tail's parameter names in the gate's order: projection 0, words 0, projection 1, ..."""
        return [f"decoder.tail.{i}.{j}.weight" for i in range(len(self.widths)) for j in (0, 1)]

    def param_shapes(self) -> dict:
        bounds = self.layout.bounds
        shapes = {"decoder.head.weight": (self.cutoffs[0] + len(self.widths), self.hidden_size)}
        if self.head_bias:
            shapes["decoder.head.bias"] = (self.cutoffs[0] + len(self.widths),)
        for i, width in enumerate(self.widths):
            shapes[f"decoder.tail.{i}.0.weight"] = (width, self.hidden_size)
            shapes[f"decoder.tail.{i}.1.weight"] = (bounds[i + 1] - bounds[i], width)
        return shapes

    def init_params(self, gen, dtype, bound) -> dict:
        """Weights uniform in [-bound, bound], drawn in ``param_shapes`` order; the head bias at zero.
        (torch draws its own way; the cross-checks copy weights, so it does not matter.)"""
        return init_uniform(self.param_shapes(), gen, dtype, bound)

    def loss(self, tape, hidden, nodes, targets, weights, sgd_lr=None, sparse=False):
        return tape.apply(TwoLevelSoftmaxCE(self.layout, sgd_lr), hidden, nodes["decoder.head.weight"],
                          nodes.get("decoder.head.bias"), targets, weights,
                          *(nodes[name] for name in self.tail_names()))

    def nll(self, params, hidden, targets):
        return nll_rows(self.layout, hidden, params["decoder.head.weight"], params.get("decoder.head.bias"),
                        [params[name] for name in self.tail_names()], targets)

    def log_probs(self, params, hidden):
        return log_probs(self.layout, hidden, params["decoder.head.weight"], params.get("decoder.head.bias"),
                         [params[name] for name in self.tail_names()])


def module_state(params) -> dict:
    """The adaptive layer's parameters among a model's, under the torch module's state_dict keys."""
    return {name[len(PREFIX):]: value for name, value in params.items() if name.startswith(PREFIX)}


def from_module_state(state) -> dict:
    """The torch module's state_dict (arrays) under rnnlab's parameter names."""
    return {PREFIX + key: value for key, value in state.items()}
