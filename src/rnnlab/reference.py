"""The tutorial's model, literally: the slow reference for tests and benchmarks.

One-hot input vectors, one gate call at a time, the forward pass recomputed
inside every backward call, and the tutorial's two nested loops over time for
BPTT. It shares no code with the engine (numpy only), so agreeing with it
means something. Vectors are 1-D: x (word_dim,), s (hidden_dim,).
"""
from __future__ import annotations

import numpy as np


def mul_forward(W, x):
    return W.dot(x)


def mul_backward(W, x, dz):
    return np.outer(dz, x), W.T.dot(dz)


def tanh_backward(pre, top):
    out = np.tanh(pre)
    return (1.0 - out * out) * top


def softmax(scores):
    e = np.exp(scores)
    return e / e.sum()


def one_hot(index, size):
    v = np.zeros(size)
    v[index] = 1.0
    return v


class Layer:
    """One time step: state = tanh(U x + W previous), scores = V state."""

    def forward(self, x, previous, U, W, V):
        self.from_input = mul_forward(U, x)
        self.from_state = mul_forward(W, previous)
        self.pre = self.from_state + self.from_input
        self.s = np.tanh(self.pre)
        self.mulv = mul_forward(V, self.s)  # the tutorial's name for the output scores

    def backward(self, x, previous, U, W, V, grad_state, grad_scores):
        """Recompute this step, then return (grad of previous state, dU, dW, dV)."""
        self.forward(x, previous, U, W, V)
        dV, grad_from_output = mul_backward(V, self.s, grad_scores)
        grad_pre = tanh_backward(self.pre, grad_from_output + grad_state)
        dW, grad_previous = mul_backward(W, previous, grad_pre)
        dU, _ = mul_backward(U, x, grad_pre)
        return grad_previous, dU, dW, dV


class ReferenceModel:
    """The tutorial's Model, given its weights: U (H, V), W (H, H), V (V, H)."""

    def __init__(self, U, W, V, bptt_truncate=4):
        self.U, self.W, self.V = (np.array(a, dtype=np.float64) for a in (U, W, V))
        self.hidden_dim, self.word_dim = self.U.shape
        self.bptt_truncate = bptt_truncate

    def forward_propagation(self, x):
        steps = []
        state = np.zeros(self.hidden_dim)
        for word in x:
            steps.append(Layer())
            steps[-1].forward(one_hot(word, self.word_dim), state, self.U, self.W, self.V)
            state = steps[-1].s
        return steps

    def calculate_loss(self, x, y):
        layers = self.forward_propagation(x)
        loss = 0.0
        for layer, target in zip(layers, y):
            loss += -np.log(softmax(layer.mulv)[target])
        return loss / float(len(y))

    def calculate_total_loss(self, X, Y):
        return sum(self.calculate_loss(x, y) for x, y in zip(X, Y)) / float(len(Y))

    def bptt(self, x, y):
        """For each step t: the loss's gradient through step t and then back
        through at most ``bptt_truncate`` earlier steps, one layer call each."""
        steps = self.forward_propagation(x)
        H = self.hidden_dim
        dU, dW, dV = np.zeros(self.U.shape), np.zeros(self.W.shape), np.zeros(self.V.shape)
        for t, step in enumerate(steps):
            grad_scores = softmax(step.mulv) - one_hot(y[t], self.word_dim)
            before = steps[t - 1].s if t > 0 else np.zeros(H)
            grad_previous, dU_t, dW_t, dV_t = step.backward(
                one_hot(x[t], self.word_dim), before, self.U, self.W, self.V, np.zeros(H), grad_scores)
            dV += dV_t
            dU += dU_t
            dW += dW_t
            for k in range(t - 1, max(t - self.bptt_truncate, 0) - 1, -1):
                before = steps[k - 1].s if k > 0 else np.zeros(H)
                grad_previous, dU_k, dW_k, _ = steps[k].backward(
                    one_hot(x[k], self.word_dim), before, self.U, self.W, self.V, grad_previous,
                    np.zeros(self.word_dim))
                dU += dU_k
                dW += dW_k
        return dU, dW, dV

    def sgd_step(self, x, y, learning_rate):
        dU, dW, dV = self.bptt(x, y)
        self.U -= learning_rate * dU
        self.V -= learning_rate * dV
        self.W -= learning_rate * dW

    def train(self, X, Y, learning_rate=0.005, nepoch=100, evaluate_loss_after=5):
        """The tutorial's loop without its printing; returns [(examples seen, loss)]."""
        seen = 0
        losses = []
        for epoch in range(nepoch):
            if epoch % evaluate_loss_after == 0:
                losses.append((seen, self.calculate_total_loss(X, Y)))
                if len(losses) > 1 and losses[-1][1] > losses[-2][1]:
                    learning_rate *= 0.5
            for x, y in zip(X, Y):
                self.sgd_step(x, y, learning_rate)
                seen += 1
        return losses
