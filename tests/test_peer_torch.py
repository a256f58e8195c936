"""Cross-checks against PyTorch autograd on the same weights (float64, 1e-10).

Run with ``pytest -m peer`` after installing the ``peer`` extra (torch==2.13.0).
Our parameter names are those of PyTorch's word_language_model, so the
weights are copied into ``nn.Embedding`` + ``nn.RNN`` + ``nn.Linear`` by name.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from rnnlab import LanguageModel  # noqa: E402

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("torch_float64")]
REL = 1e-10

LAYOUTS = {
    "embed None, no bias": dict(embed_size=None, bias=False, num_layers=1),
    "embed + bias, 2 layers": dict(embed_size=6, bias=True, num_layers=2),
    "embed None, bias, 2 layers": dict(embed_size=None, bias=True, num_layers=2),
    "embed, no bias, 1 layer": dict(embed_size=4, bias=False, num_layers=1),
}


class TorchLM(nn.Module):
    """word_language_model's RNNModel without dropout: encoder, rnn, decoder."""

    def __init__(self, V, H, E, num_layers, bias):
        super().__init__()
        self.encoder = nn.Embedding(V, E or H)
        self.rnn = nn.RNN(E or H, H, num_layers, nonlinearity="tanh", bias=bias)
        self.decoder = nn.Linear(H, V, bias=bias)

    def forward(self, inputs, hidden):
        out, hidden = self.rnn(self.encoder(inputs), hidden)
        return self.decoder(out), hidden


def to_torch(model: LanguageModel) -> TorchLM:
    c = model.config
    net = TorchLM(c.vocab_size, c.hidden_size, c.embed_size, c.num_layers, c.bias)
    state = net.state_dict()
    with torch.no_grad():
        for name, value in model.params.items():
            assert tuple(state[name].shape) == value.shape, name
            state[name].copy_(torch.from_numpy(value))
        if c.embed_size is None:  # the embedding feeds the recurrence directly: W_ih = I, frozen
            net.rnn.weight_ih_l0.copy_(torch.eye(c.hidden_size))
            net.rnn.weight_ih_l0.requires_grad_(False)
    expected = set(model.params) | ({"rnn.weight_ih_l0"} if c.embed_size is None else set())
    assert set(state) == expected
    return net


def make_model(layout, V=13, H=7, seed=0):
    return LanguageModel(V, H, dtype="float64", seed=seed, **LAYOUTS[layout])


def make_batch(model, T, B, seed, masked):
    gen = np.random.default_rng(seed)
    inputs = gen.integers(0, model.vocab_size, (T, B))
    targets = gen.integers(0, model.vocab_size, (T, B))
    mask = None
    if masked:
        mask = (gen.random((T, B)) < 0.65).astype(np.float64)
        mask[-2:, 0] = 0.0  # a sentence that ends early
        mask[0, 0] = 1.0
    c = model.config
    parts = tuple(gen.standard_normal((c.num_layers, B, c.hidden_size)) * 0.5 for _ in c.cell_type.state)
    return inputs, targets, mask, c.cell_type.hidden(parts)  # as the model hands it out


def masked_nll_sum(logits, targets, mask):
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.sum() if mask is None else (nll * mask.reshape(-1)).sum()


def rel_diff(ours, theirs):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def compare_grads(model, net, grads):
    named = dict(net.named_parameters())
    for name in model.params:
        assert named[name].grad is not None, name
        err = rel_diff(grads[name], named[name].grad)
        assert err < REL, f"{name}: relative difference {err:.2e}"
    if model.config.embed_size is None:
        assert named["rnn.weight_ih_l0"].grad is None


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("masked", [False, True])
def test_full_bptt_matches_torch(layout, masked):
    model = make_model(layout, seed=1)
    net = to_torch(model)
    T, B = 9, 4
    inputs, targets, mask, hidden = make_batch(model, T, B, seed=2, masked=masked)
    ours = model.loss_and_grads(inputs, targets, mask=mask, hidden=hidden, bptt="full")

    t_mask = None if mask is None else torch.from_numpy(mask)
    count = T * B if mask is None else mask.sum()
    logits, h_final = net(torch.from_numpy(inputs), torch.from_numpy(hidden))
    if mask is None:
        loss = F.cross_entropy(logits.reshape(-1, model.vocab_size), torch.from_numpy(targets).reshape(-1))
    else:
        loss = masked_nll_sum(logits, torch.from_numpy(targets), t_mask) / count
    loss.backward()
    assert abs(ours.loss - loss.item()) <= REL * abs(loss.item())
    compare_grads(model, net, ours.grads)
    assert rel_diff(ours.hidden, h_final) < REL


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("T,K", [(10, 3), (8, 4), (5, 1)])
def test_chunk_bptt_matches_torch_detached_chunks(layout, masked, T, K):
    model = make_model(layout, seed=3)
    net = to_torch(model)
    B = 3
    inputs, targets, mask, hidden = make_batch(model, T, B, seed=T * K, masked=masked)
    ours = model.loss_and_grads(inputs, targets, mask=mask, hidden=hidden, bptt="chunk", truncate=K)

    count = T * B if mask is None else mask.sum()
    h = torch.from_numpy(hidden)
    total = 0.0
    for lo in range(0, T, K):
        logits, h = net(torch.from_numpy(inputs[lo:lo + K]), h)
        chunk_mask = None if mask is None else torch.from_numpy(mask[lo:lo + K])
        total = total + masked_nll_sum(logits, torch.from_numpy(targets[lo:lo + K]), chunk_mask)
        h = h.detach()
    loss = total / count
    loss.backward()
    assert abs(ours.loss - loss.item()) <= REL * abs(loss.item())
    compare_grads(model, net, ours.grads)
    assert rel_diff(ours.hidden, h) < REL


def test_chunk_differs_from_full_in_torch_too():
    """The chunked comparison is not vacuous: torch's chunked gradient is not its full one."""
    model = make_model("embed + bias, 2 layers", seed=4)
    inputs, targets, _, hidden = make_batch(model, 8, 2, seed=4, masked=False)
    full = model.loss_and_grads(inputs, targets, hidden=hidden).grads
    chunk = model.loss_and_grads(inputs, targets, hidden=hidden, bptt="chunk", truncate=2).grads
    assert np.abs(full["rnn.weight_hh_l0"] - chunk["rnn.weight_hh_l0"]).max() > 1e-6


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_export_import_log_probs(layout):
    model = make_model(layout, V=29, H=8, seed=5)
    net = to_torch(model)
    inputs, _, _, hidden = make_batch(model, 6, 3, seed=6, masked=False)
    ours, ours_final = model.log_probs(inputs, hidden=hidden)
    with torch.no_grad():
        logits, final = net(torch.from_numpy(inputs), torch.from_numpy(hidden))
        theirs = F.log_softmax(logits, dim=-1)
    assert rel_diff(ours, theirs) < 1e-12
    assert rel_diff(ours_final, final) < 1e-12

    # import: torch weights (changed there) into a fresh model by name
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "rnn.weight_ih_l0" or model.config.embed_size is not None:
                p.mul_(0.9).add_(0.01)
        logits, _ = net(torch.from_numpy(inputs), torch.from_numpy(hidden))
        theirs = F.log_softmax(logits, dim=-1)
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items() if k in model.params}
    imported = LanguageModel.from_config(model.config, state)
    ours, _ = imported.log_probs(inputs, hidden=hidden)
    assert rel_diff(ours, theirs) < 1e-12
    # step by step generation agrees with torch too
    h = hidden
    for t in range(inputs.shape[0]):
        lp, h = imported.step(inputs[t], h)
        assert rel_diff(lp, theirs[t]) < 1e-12


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fused_sgd_steps_match_torch_optim_sgd(layout):
    """Three LanguageModel.sgd_step calls (full BPTT, masked) against torch.optim.SGD on the same batches."""
    model = make_model(layout, V=1100, H=7, seed=3)  # two vocabulary parts when rnnlab has two threads
    net = to_torch(model)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.3)
    for step in range(3):
        inputs, targets, mask, hidden = make_batch(model, 6, 3, seed=10 + step, masked=True)
        loss, _ = model.sgd_step(inputs, targets, 0.3, mask=mask, hidden=hidden)
        opt.zero_grad()
        logits, _ = net(torch.from_numpy(inputs), torch.from_numpy(hidden))
        theirs = masked_nll_sum(logits, torch.from_numpy(targets), torch.from_numpy(mask)) / mask.sum()
        theirs.backward()
        opt.step()
        assert abs(loss - theirs.item()) <= REL * abs(theirs.item())
    named = dict(net.named_parameters())
    for name, value in model.params.items():
        assert rel_diff(value, named[name]) < REL, name
