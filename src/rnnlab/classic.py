"""The tutorial's API, unchanged, on the fast engine.

For the people who followed "RNN from scratch": ``Model(word_dim, hidden_dim,
bptt_truncate)`` with the attributes ``U`` (hidden x word), ``W`` (hidden x
hidden) and ``V`` (word x hidden), initialised exactly as the tutorial does
(numpy's global generator, same draws in the same order), and the methods
``forward_propagation``, ``predict``, ``calculate_loss``,
``calculate_total_loss``, ``bptt``, ``sgd_step`` and ``train``, which give the
tutorial's numbers. Underneath is a float64 ``LanguageModel`` without biases
or input projection: ``encoder.weight`` is U^T (a row per word, so a one-hot
product becomes a row lookup), ``rnn.weight_hh_l0`` is W, ``decoder.weight``
is V. The gradient is the tutorial's: the loss at step t flows back through
at most ``bptt_truncate`` earlier steps ("window" BPTT).
"""
from __future__ import annotations

import sys
from datetime import datetime
from typing import NamedTuple

import numpy as np

from .model import LanguageModel, ModelConfig, top_states


class Step(NamedTuple):
    """What the tutorial's RNNLayer keeps of one time step."""

    s: np.ndarray  # hidden state (hidden_dim,)
    mulv: np.ndarray  # output scores V s (word_dim,), before the softmax


def getSentenceData(path, vocabulary_size=8000):  # noqa: N802 (the tutorial's name)
    """The tutorial's loader: (X_train, y_train) from the Reddit comments CSV."""
    from .data.prepare import getSentenceData as load

    return load(path, vocabulary_size)


class Model:
    def __init__(self, word_dim, hidden_dim=100, bptt_truncate=4):
        self.word_dim = word_dim
        self.hidden_dim = hidden_dim
        self.bptt_truncate = bptt_truncate
        U = np.random.uniform(-np.sqrt(1.0 / word_dim), np.sqrt(1.0 / word_dim), (hidden_dim, word_dim))
        W = np.random.uniform(-np.sqrt(1.0 / hidden_dim), np.sqrt(1.0 / hidden_dim), (hidden_dim, hidden_dim))
        V = np.random.uniform(-np.sqrt(1.0 / hidden_dim), np.sqrt(1.0 / hidden_dim), (word_dim, hidden_dim))
        config = ModelConfig(word_dim, hidden_dim, embed_size=None, bias=False, dtype="float64")
        self.lm = LanguageModel.from_config(
            config, {"encoder.weight": U.T, "rnn.weight_hh_l0": W, "decoder.weight": V})

    # The tutorial's weights are views of the engine's parameters: assigning
    # to them (or updating them in place) changes the model.
    @property
    def U(self):  # noqa: N802
        return self.lm.params["encoder.weight"].T

    @U.setter
    def U(self, value):  # noqa: N802
        self._set("encoder.weight", np.asarray(value).T)

    @property
    def W(self):  # noqa: N802
        return self.lm.params["rnn.weight_hh_l0"]

    @W.setter
    def W(self, value):  # noqa: N802
        self._set("rnn.weight_hh_l0", value)

    @property
    def V(self):  # noqa: N802
        return self.lm.params["decoder.weight"]

    @V.setter
    def V(self, value):  # noqa: N802
        self._set("decoder.weight", value)

    def _set(self, name, value):
        value = np.asarray(value, dtype=np.float64)
        if value.shape != self.lm.params[name].shape:
            raise ValueError(f"{name} must be shaped {self.lm.params[name].shape}, not {value.shape}")
        if value is not self.lm.params[name]:  # `model.U -= x` hands back the same array
            self.lm.params[name] = np.ascontiguousarray(value)

    def forward_propagation(self, x):
        """One Step(s, mulv) per word of the sentence x (a list of word indices)."""
        ids = np.asarray(x, dtype=np.intp)[:, None]
        states, _ = top_states(self.lm.params, self.lm.config, ids)
        scores = states @ self.V.T
        return [Step(states[t], scores[t]) for t in range(len(x))]

    def predict(self, x):
        """The most likely next word after each word of x."""
        logp, _ = self.lm.log_probs(np.asarray(x, dtype=np.intp))
        return list(np.argmax(logp[:, 0], axis=1))

    def calculate_loss(self, x, y):
        """Mean cross-entropy of the sentence (nats per word)."""
        assert len(x) == len(y)
        nll, _ = self.lm.nll(np.asarray(x), np.asarray(y))
        return float(nll.sum()) / float(len(y))

    def calculate_total_loss(self, X, Y):
        """The mean over sentences of each sentence's mean loss, computed in padded batches."""
        sums = sentence_nll_sums(self.lm, X, Y)
        lengths = np.array([len(y) for y in Y], dtype=np.float64)
        return float(np.mean(sums / lengths)) if len(Y) else 0.0

    def bptt(self, x, y):
        """Gradients (dU, dW, dV) of the sentence's summed loss, truncated as the tutorial does."""
        assert len(x) == len(y)
        grads = self.lm.loss_and_grads(np.asarray(x), np.asarray(y), bptt="window",
                                       truncate=self.bptt_truncate, reduction="sum").grads
        return grads["encoder.weight"].T, grads["rnn.weight_hh_l0"], grads["decoder.weight"]

    def sgd_step(self, x, y, learning_rate):
        """One SGD step on one sentence: U, V, W -= learning_rate * (dU, dV, dW).

        The tutorial's update, done in place by the engine's fused SGD step
        (``LanguageModel.sgd_step``): V steps inside the output layer,
        a vocabulary part per thread, and U only at the columns of the sentence's words (its
        gradient is zero elsewhere).
        """
        assert len(x) == len(y)
        self.lm.sgd_step(np.asarray(x), np.asarray(y), learning_rate, bptt="window",
                         truncate=self.bptt_truncate, reduction="sum")

    def train(self, X, Y, learning_rate=0.005, nepoch=100, evaluate_loss_after=5):
        """The tutorial's loop: SGD one sentence at a time, in order, for ``nepoch`` epochs.

        Every ``evaluate_loss_after`` epochs the mean loss is printed (the
        tutorial's line) and recorded; when it rose since the previous record
        the learning rate halves. Returns [(examples seen, loss), ...].
        """
        history = []
        seen = 0
        for epoch in range(nepoch):
            if epoch % evaluate_loss_after == 0:
                history.append((seen, self.calculate_total_loss(X, Y)))
                _report(history, epoch)
                if len(history) > 1 and history[-1][1] > history[-2][1]:
                    learning_rate *= 0.5
                    print("Setting learning rate to %f" % learning_rate)
                sys.stdout.flush()
            for x, y in zip(X, Y):
                self.sgd_step(x, y, learning_rate)
                seen += 1
        return history


def _report(history, epoch):
    seen, loss = history[-1]
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp}: Loss after num_examples_seen={seen} epoch={epoch}: {loss:f}")


def sentence_nll_sums(lm: LanguageModel, X, Y, batch_size=64):
    """Summed -log p of each sentence (len(X),), sentences of similar length batched together.

    A sentence padded at its end keeps its own numbers: the recurrence runs
    forward only, and the padded positions are left out of the sums.
    """
    sums = np.zeros(len(Y))
    order = np.argsort([len(x) for x in X], kind="stable")
    for lo in range(0, len(order), batch_size):
        batch = order[lo:lo + batch_size]
        T = max(len(X[i]) for i in batch)
        inputs = np.zeros((T, len(batch)), dtype=np.intp)
        targets = np.zeros((T, len(batch)), dtype=np.intp)
        for b, i in enumerate(batch):
            inputs[: len(X[i]), b] = X[i]
            targets[: len(Y[i]), b] = Y[i]
        nll, _ = lm.nll(inputs, targets)
        for b, i in enumerate(batch):
            sums[i] = nll[: len(Y[i]), b].sum()
    return sums
