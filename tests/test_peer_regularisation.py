"""Dropout and tied weights against PyTorch autograd on the same weights and the same masks.

PyTorch side: word_language_model's RNNModel written out layer by layer, so that
both sides can be given the same dropout masks (drawn here in rnnlab's order:
the embedding output, each layer's output below the top, the top's output).
"""
import numpy as np
import pytest

from rnnlab import gates
from rnnlab.cells import CELLS
from rnnlab.model import LanguageModel

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.peer

TORCH_CELLS = {"rnn": lambda i, h, b: torch.nn.RNN(i, h, 1, nonlinearity="tanh", bias=b),
               "lstm": lambda i, h, b: torch.nn.LSTM(i, h, 1, bias=b),
               "gru": lambda i, h, b: torch.nn.GRU(i, h, 1, bias=b)}
CASES = [(cell, layers, tied) for cell in ("rnn", "lstm", "gru") for layers, tied in ((1, True), (2, False), (2, True))]


def torch_loss(model, inputs, targets, hidden, masks):
    """(loss, {name: grad}, final state parts) of word_language_model's forward with the given masks."""
    c, p = model.config, model.params
    T, B = inputs.shape
    t = {name: torch.tensor(value, requires_grad=True) for name, value in p.items()}
    x = t["encoder.weight"][torch.tensor(inputs)]
    finals = []
    for k in range(c.num_layers):
        x = x * torch.tensor(masks[k]).reshape(T, B, -1)
        layer = TORCH_CELLS[c.cell](x.shape[-1], c.hidden_size, c.bias).double()
        # a functional call with rnnlab's tensors, so that the gradients reach them by name
        params = {f"{kind}_l0": t[f"rnn.{kind}_l{k}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                  if f"rnn.{kind}_l{k}" in t}
        state = tuple(torch.tensor(part[k][None]) for part in hidden)
        x, final = torch.func.functional_call(layer, params, (x, state if len(state) > 1 else state[0]))
        finals.append(final)
    x = x * torch.tensor(masks[-1]).reshape(T, B, -1)
    weight = t["encoder.weight"] if c.tied else t["decoder.weight"]
    logits = x.reshape(T * B, -1) @ weight.T + t["decoder.bias"]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets.reshape(-1)))
    loss.backward()
    return float(loss.detach()), {name: value.grad.numpy() for name, value in t.items()}, finals


@pytest.mark.parametrize("cell,layers,tied", CASES)
def test_dropout_and_tied_weights_equal_pytorch(cell, layers, tied):
    if cell not in CELLS:
        pytest.skip(f"no {cell} cell in this build")
    model = LanguageModel(17, 6, embed_size=6, cell=cell, num_layers=layers, tied=tied, dropout=0.3,
                          dtype="float64", seed=3)
    gen = np.random.default_rng(1)
    T, B = 7, 3
    inputs, targets = gen.integers(0, 17, (T, B)), gen.integers(0, 17, (T, B))
    parts = len(CELLS[cell].state)
    hidden = tuple(gen.standard_normal((layers, B, 6)) * 0.3 for _ in range(parts))
    ours = model.loss_and_grads(inputs, targets, hidden=hidden if parts > 1 else hidden[0],
                                dropout_rng=np.random.default_rng(5))
    draw = np.random.default_rng(5)
    masks = [gates.dropout_mask(draw, (T * B, 6), 0.3, np.dtype(np.float64)) for _ in range(layers + 1)]
    loss, grads, _ = torch_loss(model, inputs, targets, hidden, masks)
    assert ours.loss == pytest.approx(loss, rel=1e-12)
    assert set(ours.grads) == set(model.params)
    for name, g in ours.grads.items():
        np.testing.assert_allclose(g, grads[name], rtol=1e-10, atol=1e-13, err_msg=name)
