"""The adaptive output layer against ``torch.nn.AdaptiveLogSoftmaxWithLoss`` on the same weights
(float64, 1e-10): loss, per-row log-probabilities, the full ``log_prob``, every gradient, the
state_dict's names and shapes both ways, and fused SGD steps against ``torch.optim.SGD`` (clipped ones
after ``clip_grad_norm_``).

Run with ``pytest -m peer`` after installing the ``peer`` extra (torch==2.13.0). rnnlab's
parameter names less ``decoder.`` are the module's state_dict keys.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from rnnlab import LanguageModel, ModelConfig  # noqa: E402
from rnnlab.adaptive_softmax import from_module_state, module_state  # noqa: E402
from rnnlab.graph import Tape  # noqa: E402
from rnnlab.model import top_states  # noqa: E402

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("torch_float64")]
REL = 1e-10
V, H = 23, 64
CUTOFFS = [(5,), (4, 11), (2, 6, 15)]


def rel_diff(ours, theirs):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def make_pair(cutoffs, div_value, head_bias, seed=0):
    """rnnlab's layer and parameters, and torch's module holding the same weights."""
    config = ModelConfig(V, H, softmax="adaptive", cutoffs=cutoffs, div_value=div_value, head_bias=head_bias)
    layer = config.output_layer()
    params = layer.init_params(np.random.default_rng(seed), np.dtype(np.float64), 0.3)
    if head_bias:  # not the zeros it starts at
        bias = params["decoder.head.bias"]
        bias += np.random.default_rng(seed + 1).uniform(-0.5, 0.5, bias.shape)
    module = nn.AdaptiveLogSoftmaxWithLoss(H, V, list(cutoffs), div_value=div_value, head_bias=head_bias)
    state = module.state_dict()
    ours = module_state(params)
    assert set(ours) == set(state)
    assert all(tuple(state[key].shape) == ours[key].shape for key in state)
    module.load_state_dict({key: torch.from_numpy(value) for key, value in ours.items()})
    return layer, params, module


def make_rows(N=60, seed=2, masked=False):
    gen = np.random.default_rng(seed)
    hidden = np.tanh(gen.standard_normal((N, H)))
    targets = gen.integers(0, V, N)
    targets[:V] = np.arange(V)  # every id, so every cluster, at least once
    mask = (gen.random(N) < 0.7).astype(np.float64) if masked else np.ones(N)
    return hidden, targets, mask


@pytest.mark.parametrize("cutoffs", CUTOFFS)
@pytest.mark.parametrize("div_value", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("head_bias", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_loss_log_probs_and_gradients_match_torch(cutoffs, div_value, head_bias, masked):
    layer, params, module = make_pair(cutoffs, div_value, head_bias)
    hidden, targets, mask = make_rows(masked=masked)
    weights = mask / mask.sum()  # the mean over the unmasked rows, as the model's "mean"

    tape = Tape()
    nodes = {name: tape.param(value, name) for name, value in params.items()}
    hidden_node = tape.param(hidden, "hidden")
    loss = layer.loss(tape, hidden_node, nodes, targets, weights)
    tape.backward(loss)

    t_hidden = torch.from_numpy(hidden).requires_grad_(True)
    out = module(t_hidden, torch.from_numpy(targets))
    theirs = out.loss if not masked else (-out.output * torch.from_numpy(weights)).sum()
    theirs.backward()

    assert abs(float(loss.value) - theirs.item()) <= REL * abs(theirs.item())
    assert rel_diff(layer.nll(params, hidden, targets), -out.output) < REL
    with torch.no_grad():
        assert rel_diff(layer.log_probs(params, hidden), module.log_prob(t_hidden)) < REL
    assert rel_diff(hidden_node.grad, t_hidden.grad) < REL
    named = dict(module.named_parameters())
    for name, node in nodes.items():
        err = rel_diff(node.grad, named[name[len("decoder."):]].grad)
        assert err < REL, f"{name}: relative difference {err:.2e}"


@pytest.mark.parametrize("cutoffs", CUTOFFS)
def test_weights_move_to_and_from_the_module_unchanged(cutoffs):
    """Export by name into a fresh module; change the weights there; import them back by name."""
    model = LanguageModel(V, H, embed_size=8, softmax="adaptive", cutoffs=cutoffs, div_value=2.0,
                          head_bias=True, dtype="float64", seed=4)
    module = nn.AdaptiveLogSoftmaxWithLoss(H, V, list(cutoffs), div_value=2.0, head_bias=True)
    exported = module_state(model.state_dict())
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {k: v.shape for k, v in exported.items()}
    module.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()})
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(0.9).add_(0.01)
    imported = from_module_state({k: v.numpy().copy() for k, v in module.state_dict().items()})
    model.load_params({**model.params, **imported})
    inputs = np.random.default_rng(5).integers(0, V, (5, 3))
    logp, _ = model.log_probs(inputs)
    states, _ = top_states(model.params, model.config, inputs)
    with torch.no_grad():
        theirs = module.log_prob(torch.from_numpy(states))
    assert rel_diff(logp.reshape(-1, V), theirs) < 1e-12


class TorchAdaptiveLM(nn.Module):
    """Embedding, a tanh RNN and the adaptive softmax, named as rnnlab names its parameters."""

    def __init__(self, E, cutoffs, div_value, head_bias):
        super().__init__()
        self.encoder = nn.Embedding(V, E)
        self.rnn = nn.RNN(E, H, 1, nonlinearity="tanh")
        self.decoder = nn.AdaptiveLogSoftmaxWithLoss(H, V, list(cutoffs), div_value=div_value, head_bias=head_bias)

    def forward(self, inputs, targets, mask, hidden):
        out, hidden = self.rnn(self.encoder(inputs), hidden)
        result = self.decoder(out.reshape(-1, H), targets.reshape(-1))
        return (-result.output * mask.reshape(-1)).sum() / mask.sum(), hidden


def steps_against_torch(step, clip=None, seed=7):
    """Three steps of ``step(model, inputs, targets, mask, hidden) -> (loss, hidden, norm)`` (full
    BPTT, masked, carried state) against torch.optim.SGD at lr 0.4, after clip_grad_norm_(clip) when
    ``clip`` is given: the losses, the hidden states, the norms and finally every parameter agree."""
    model = LanguageModel(V, H, embed_size=6, softmax="adaptive", cutoffs=(4, 11), div_value=2.0, head_bias=True,
                          dtype="float64", seed=6)
    net = TorchAdaptiveLM(6, (4, 11), 2.0, True)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    opt = torch.optim.SGD(net.parameters(), lr=0.4)
    gen = np.random.default_rng(seed)
    hidden = gen.standard_normal((1, 3, H)) * 0.5
    t_hidden = torch.from_numpy(hidden)
    for _ in range(3):
        inputs, targets = gen.integers(0, V, (6, 3)), gen.integers(0, V, (6, 3))
        mask = (gen.random((6, 3)) < 0.7).astype(np.float64)
        mask[0, 0] = 1.0
        loss, hidden, norm = step(model, inputs, targets, mask, hidden)
        opt.zero_grad()
        theirs, t_hidden = net(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(mask), t_hidden)
        theirs.backward()
        if clip is not None:
            t_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip).item()
            assert norm > clip and abs(norm - t_norm) <= REL * t_norm  # the clip binds, and the norms agree
        opt.step()
        t_hidden = t_hidden.detach()
        assert abs(loss - theirs.item()) <= REL * abs(theirs.item())
        assert rel_diff(np.asarray(hidden), t_hidden) < REL
    named = dict(net.named_parameters())
    for name, value in model.params.items():
        assert rel_diff(value, named[name]) < REL, name


def test_fused_sgd_steps_match_torch_optim_sgd():
    """Three LanguageModel.sgd_step calls against torch.optim.SGD."""
    def step(model, inputs, targets, mask, hidden):
        return (*model.sgd_step(inputs, targets, 0.4, mask=mask, hidden=hidden), None)
    steps_against_torch(step)


def test_clipped_sgd_steps_match_clip_grad_norm_and_torch_optim_sgd():
    """Three LanguageModel.clipped_sgd_step calls against clip_grad_norm_ then torch.optim.SGD."""
    def step(model, inputs, targets, mask, hidden):
        return model.clipped_sgd_step(inputs, targets, 0.4, 0.1, mask=mask, hidden=hidden)
    steps_against_torch(step, clip=0.1, seed=8)
