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
    """One time step: s = tanh(U x + W prev_s), mulv = V s."""

    def forward(self, x, prev_s, U, W, V):
        self.mulu = mul_forward(U, x)
        self.mulw = mul_forward(W, prev_s)
        self.add = self.mulw + self.mulu
        self.s = np.tanh(self.add)
        self.mulv = mul_forward(V, self.s)

    def backward(self, x, prev_s, U, W, V, diff_s, dmulv):
        self.forward(x, prev_s, U, W, V)
        dV, dsv = mul_backward(V, self.s, dmulv)
        dadd = tanh_backward(self.add, dsv + diff_s)
        dW, dprev_s = mul_backward(W, prev_s, dadd)
        dU, _ = mul_backward(U, x, dadd)
        return dprev_s, dU, dW, dV


class ReferenceModel:
    """The tutorial's Model, given its weights: U (H, V), W (H, H), V (V, H)."""

    def __init__(self, U, W, V, bptt_truncate=4):
        self.U, self.W, self.V = (np.array(a, dtype=np.float64) for a in (U, W, V))
        self.hidden_dim, self.word_dim = self.U.shape
        self.bptt_truncate = bptt_truncate

    def forward_propagation(self, x):
        layers = []
        prev_s = np.zeros(self.hidden_dim)
        for word in x:
            layer = Layer()
            layer.forward(one_hot(word, self.word_dim), prev_s, self.U, self.W, self.V)
            prev_s = layer.s
            layers.append(layer)
        return layers

    def calculate_loss(self, x, y):
        layers = self.forward_propagation(x)
        loss = 0.0
        for layer, target in zip(layers, y):
            loss += -np.log(softmax(layer.mulv)[target])
        return loss / float(len(y))

    def calculate_total_loss(self, X, Y):
        return sum(self.calculate_loss(x, y) for x, y in zip(X, Y)) / float(len(Y))

    def bptt(self, x, y):
        layers = self.forward_propagation(x)
        dU, dW, dV = np.zeros(self.U.shape), np.zeros(self.W.shape), np.zeros(self.V.shape)
        prev_s_t = np.zeros(self.hidden_dim)
        for t in range(len(layers)):
            dmulv = softmax(layers[t].mulv)
            dmulv[y[t]] -= 1.0
            x_t = one_hot(x[t], self.word_dim)
            dprev_s, dU_t, dW_t, dV_t = layers[t].backward(
                x_t, prev_s_t, self.U, self.W, self.V, np.zeros(self.hidden_dim), dmulv)
            prev_s_t = layers[t].s
            no_output = np.zeros(self.word_dim)
            for i in range(t - 1, max(-1, t - self.bptt_truncate - 1), -1):
                x_i = one_hot(x[i], self.word_dim)
                prev_s_i = np.zeros(self.hidden_dim) if i == 0 else layers[i - 1].s
                dprev_s, dU_i, dW_i, _ = layers[i].backward(
                    x_i, prev_s_i, self.U, self.W, self.V, dprev_s, no_output)
                dU_t += dU_i
                dW_t += dW_i
            dV += dV_t
            dU += dU_t
            dW += dW_t
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
