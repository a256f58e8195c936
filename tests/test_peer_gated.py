"""The LSTM and GRU against PyTorch autograd on the same weights (float64, 1e-10).

Run with ``pytest -m peer`` after installing the ``peer`` extra (torch==2.13.0).
rnnlab's parameters load by name into ``nn.Embedding`` + ``nn.LSTM``/``nn.GRU``
+ ``nn.Linear`` (state_dict keys ``encoder.weight``, ``rnn.*``,
``decoder.weight``, ``decoder.bias``): the loss, every gradient and the final
(h, c) agree in full BPTT, in chunk BPTT (torch running chunk by chunk with
the state detached in between) and in window BPTT (torch building one graph
per loss term from the detached state ``truncate`` steps earlier).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from rnnlab import LanguageModel  # noqa: E402
from test_peer_torch import make_batch as make_any_batch  # noqa: E402

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("torch_float64")]
REL = 1e-10
TORCH_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

LAYOUTS = {
    "embed, bias, 1 layer": dict(embed_size=6, bias=True, num_layers=1),
    "embed, no bias, 1 layer": dict(embed_size=6, bias=False, num_layers=1),
    "embed, bias, 2 layers": dict(embed_size=6, bias=True, num_layers=2),
    "embed, no bias, 2 layers": dict(embed_size=6, bias=False, num_layers=2),
    "embed None, bias, 1 layer": dict(embed_size=None, bias=True, num_layers=1),
}
ONE_LAYER = [name for name, kw in LAYOUTS.items() if kw["num_layers"] == 1]


class TorchLM(nn.Module):
    """word_language_model's RNNModel without dropout: encoder, rnn (LSTM or GRU), decoder."""

    def __init__(self, cell, V, H, E, G, num_layers, bias):
        super().__init__()
        self.encoder = nn.Embedding(V, E or G * H)
        self.rnn = TORCH_CELLS[cell](E or G * H, H, num_layers, bias=bias)
        self.decoder = nn.Linear(H, V, bias=bias)

    def forward(self, inputs, hidden):
        out, hidden = self.rnn(self.encoder(inputs), hidden)
        return self.decoder(out), hidden


def to_torch(model: LanguageModel) -> TorchLM:
    """rnnlab's parameters, by name, in a torch module whose state_dict has exactly those keys
    (and, without an embedding layer, a frozen identity rnn.weight_ih_l0: the encoder row is the
    pre-activation itself)."""
    c = model.config
    G = c.cell_type.gates
    net = TorchLM(c.cell, c.vocab_size, c.hidden_size, c.embed_size, G, c.num_layers, c.bias)
    state = net.state_dict()
    expected = set(model.params) | ({"rnn.weight_ih_l0"} if c.embed_size is None else set())
    assert set(state) == expected
    with torch.no_grad():
        for name, value in model.params.items():
            assert tuple(state[name].shape) == value.shape, name
            state[name].copy_(torch.from_numpy(value))
        if c.embed_size is None:
            net.rnn.weight_ih_l0.copy_(torch.eye(G * c.hidden_size))
            net.rnn.weight_ih_l0.requires_grad_(False)
    return net


def make_model(cell, layout, V=13, H=5, seed=0):
    return LanguageModel(V, H, cell=cell, dtype="float64", seed=seed, **LAYOUTS[layout])


def make_batch(model, T, B, seed, masked):
    """test_peer_torch's batch, with the state as a tuple of parts whatever the cell."""
    inputs, targets, mask, hidden = make_any_batch(model, T, B, seed, masked)
    return inputs, targets, mask, hidden if isinstance(hidden, tuple) else (hidden,)


def ours_hidden(model, parts):
    return model.config.cell_type.hidden(parts)


def torch_hidden(parts):
    tensors = tuple(torch.from_numpy(p.copy()) for p in parts)
    return tensors if len(tensors) > 1 else tensors[0]


def detach(hidden):
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def nll_sum(logits, targets, mask):
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1),
                          reduction="none")
    return nll.sum() if mask is None else (nll * torch.from_numpy(mask).reshape(-1)).sum()


def rel_diff(ours, theirs):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def compare(model, net, ours, loss, final):
    assert abs(ours.loss - loss.item()) <= REL * abs(loss.item())
    named = dict(net.named_parameters())
    for name in model.params:
        assert named[name].grad is not None, name
        err = rel_diff(ours.grads[name], named[name].grad)
        assert err < REL, f"{name}: relative difference {err:.2e}"
    if model.config.embed_size is None:
        assert named["rnn.weight_ih_l0"].grad is None
    ours_parts = ours.hidden if isinstance(ours.hidden, tuple) else (ours.hidden,)
    theirs_parts = final if isinstance(final, tuple) else (final,)
    assert len(ours_parts) == len(theirs_parts) == len(model.config.cell_type.state)
    for a, b in zip(ours_parts, theirs_parts):
        assert rel_diff(a, b) < REL


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("masked", [False, True])
def test_full_bptt_matches_torch(cell, layout, masked):
    model = make_model(cell, layout, seed=1)
    net = to_torch(model)
    T, B = 9, 4
    inputs, targets, mask, parts = make_batch(model, T, B, seed=2, masked=masked)
    ours = model.loss_and_grads(inputs, targets, mask=mask, hidden=ours_hidden(model, parts), bptt="full")
    logits, final = net(torch.from_numpy(inputs), torch_hidden(parts))
    loss = nll_sum(logits, targets, mask) / (T * B if mask is None else mask.sum())
    loss.backward()
    compare(model, net, ours, loss, final)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("T,K", [(10, 3), (5, 1)])
def test_chunk_bptt_matches_torch_detached_chunks(cell, layout, masked, T, K):
    model = make_model(cell, layout, seed=3)
    net = to_torch(model)
    B = 3
    inputs, targets, mask, parts = make_batch(model, T, B, seed=T * K, masked=masked)
    ours = model.loss_and_grads(inputs, targets, mask=mask, hidden=ours_hidden(model, parts),
                                bptt="chunk", truncate=K)
    hidden, total = torch_hidden(parts), 0.0
    for lo in range(0, T, K):
        logits, hidden = net(torch.from_numpy(inputs[lo:lo + K]), hidden)
        total = total + nll_sum(logits, targets[lo:lo + K], None if mask is None else mask[lo:lo + K])
        hidden = detach(hidden)
    loss = total / (T * B if mask is None else mask.sum())
    loss.backward()
    compare(model, net, ours, loss, hidden)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layout", ONE_LAYER)
@pytest.mark.parametrize("K", [0, 2, 4])
def test_window_bptt_matches_torch_one_graph_per_loss(cell, layout, K):
    """The tutorial's window in torch: the loss at t from a graph over steps t-K .. t that starts at
    the state before them, detached (the given initial state when t - K <= 0)."""
    model = make_model(cell, layout, seed=4)
    net = to_torch(model)
    T, B = 8, 3
    inputs, targets, mask, parts = make_batch(model, T, B, seed=5 + K, masked=True)
    ours = model.loss_and_grads(inputs, targets, mask=mask, hidden=ours_hidden(model, parts),
                                bptt="window", truncate=K)
    with torch.no_grad():  # the state before each step
        states = [torch_hidden(parts)]
        for t in range(T):
            states.append(net(torch.from_numpy(inputs[t:t + 1]), states[-1])[1])
    total = 0.0
    for t in range(T):
        lo = max(0, t - K)
        logits, _ = net(torch.from_numpy(inputs[lo:t + 1]), states[lo])
        total = total + nll_sum(logits[-1:], targets[t:t + 1], mask[t:t + 1])
    loss = total / mask.sum()
    loss.backward()
    compare(model, net, ours, loss, states[-1])
    if K < T - 1:  # a truncation: the window's gradient is not full BPTT's
        full = model.loss_and_grads(inputs, targets, mask=mask, hidden=ours_hidden(model, parts))
        assert np.abs(full.grads["rnn.weight_hh_l0"] - ours.grads["rnn.weight_hh_l0"]).max() > 1e-6


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layout", ["embed, bias, 2 layers", "embed None, bias, 1 layer"])
def test_log_probs_generation_and_import_match_torch(cell, layout):
    model = make_model(cell, layout, V=29, seed=5)
    net = to_torch(model)
    inputs, _, _, parts = make_batch(model, 6, 3, seed=6, masked=False)
    with torch.no_grad():
        for p in net.parameters():  # changed there, imported here by name
            if p.requires_grad:
                p.mul_(0.9).add_(0.01)
        logits, final = net(torch.from_numpy(inputs), torch_hidden(parts))
        theirs = F.log_softmax(logits, dim=-1)
    state = {k: v.numpy().copy() for k, v in net.state_dict().items() if k in model.params}
    imported = LanguageModel.from_config(model.config, state)
    ours, ours_final = imported.log_probs(inputs, hidden=ours_hidden(model, parts))
    assert rel_diff(ours, theirs) < 1e-12
    for a, b in zip(ours_final if cell == "lstm" else (ours_final,), final if cell == "lstm" else (final,)):
        assert rel_diff(a, b) < 1e-12
    hidden = ours_hidden(model, parts)
    for t in range(inputs.shape[0]):
        lp, hidden = imported.step(inputs[t], hidden)
        assert rel_diff(lp, theirs[t]) < 1e-12


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_sgd_steps_match_torch_optim_sgd(cell):
    """Three sgd_step calls (chunk BPTT, masked) against torch.optim.SGD on the same batches."""
    model = make_model(cell, "embed, bias, 2 layers", V=1100, seed=3)  # two vocabulary parts with two threads
    net = to_torch(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    for step in range(3):
        inputs, targets, mask, parts = make_batch(model, 6, 3, seed=10 + step, masked=True)
        loss, _ = model.sgd_step(inputs, targets, 0.3, mask=mask, hidden=ours_hidden(model, parts),
                                 bptt="chunk", truncate=3)
        opt.zero_grad()
        hidden, total = torch_hidden(parts), 0.0
        for lo in (0, 3):
            logits, hidden = net(torch.from_numpy(inputs[lo:lo + 3]), hidden)
            total = total + nll_sum(logits, targets[lo:lo + 3], mask[lo:lo + 3])
            hidden = detach(hidden)
        theirs = total / mask.sum()
        theirs.backward()
        opt.step()
        assert abs(loss - theirs.item()) <= REL * abs(theirs.item())
    named = dict(net.named_parameters())
    for name, value in model.params.items():
        assert rel_diff(value, named[name]) < REL, name
