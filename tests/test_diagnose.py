"""rnnlab.diagnose: gradients by lag against explicit Jacobians, effective memory, spectra, saturation.

The reference here is independent of rnnlab's gates: each cell's step and
its Jacobians are written from the cell equations (cells.py's module
docstring) in plain numpy, per batch row, and the gradient at a state
h_{t-k} is built as the sum over the unrolled network's paths of products
of those Jacobians.
"""
import json
import time

import numpy as np
import pytest

from rnnlab import LanguageModel
from rnnlab.diagnose import (Diagnosis, diagnose, effective_memory, gradients_by_lag, lag_curves,
                             sample_positions, saturated_share)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# -- one step of each cell and its Jacobians, per row ----------------------------------
# step(xin (G*H,), state (P*H,), w_hh (G*H, H), b_hh (G*H,)) -> (new state (P*H,),
#   d new / d state (P*H, P*H), d new / d xin (P*H, G*H), activations {name: (H,)})


def rnn_step(xin, state, w_hh, b_hh):
    h = np.tanh(xin + w_hh @ state + b_hh)
    slope = np.diag(1 - h * h)
    return h, slope @ w_hh, slope, {"h": h}


def lstm_step(xin, state, w_hh, b_hh):
    H = w_hh.shape[1]
    h_prev, c_prev = state[:H], state[H:]
    a = xin + w_hh @ h_prev + b_hh
    i, f, g, o = sigmoid(a[:H]), sigmoid(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), sigmoid(a[3 * H:])
    c = f * c_prev + i * g
    tc = np.tanh(c)
    h = o * tc
    dc_da = np.hstack([np.diag(g * i * (1 - i)), np.diag(c_prev * f * (1 - f)), np.diag(i * (1 - g * g)),
                       np.zeros((H, H))])
    dh_da = np.diag(o * (1 - tc * tc)) @ dc_da
    dh_da[:, 3 * H:] += np.diag(tc * o * (1 - o))
    d_xin = np.vstack([dh_da, dc_da])
    d_state = np.block([[dh_da @ w_hh, np.diag(o * (1 - tc * tc) * f)],
                        [dc_da @ w_hh, np.diag(f)]])
    return np.concatenate([h, c]), d_state, d_xin, {"i": i, "f": f, "g": g, "o": o, "tanh(c)": tc}


def gru_step(xin, state, w_hh, b_hh):
    H = w_hh.shape[1]
    q = w_hh @ state + b_hh
    r = sigmoid(xin[:H] + q[:H])
    z = sigmoid(xin[H:2 * H] + q[H:2 * H])
    n = np.tanh(xin[2 * H:] + r * q[2 * H:])
    h = (1 - z) * n + z * state
    to_n = (1 - z) * (1 - n * n)
    d_pre_r = np.diag(to_n * q[2 * H:] * r * (1 - r))  # the same for xin_r and q_r
    d_pre_z = np.diag((state - n) * z * (1 - z))
    d_xin = np.hstack([d_pre_r, d_pre_z, np.diag(to_n)])
    d_q = np.hstack([d_pre_r, d_pre_z, np.diag(to_n * r)])
    return h, d_q @ w_hh + np.diag(z), d_xin, {"r": r, "z": z, "n": n}


STEPS = {"rnn": rnn_step, "lstm": lstm_step, "gru": gru_step}
PARTS = {"rnn": 1, "lstm": 2, "gru": 1}


def reference_forward(params, config, ids, hidden):
    """Every layer's state (P*H,) and Jacobians at every step and row, by the equations above.

    Returns a dict (layer, step, row) -> (state, d state / d previous state, d state / d h of the layer
    below (or None at layer 0), activations); step -1 holds the start state."""
    T, B = ids.shape
    H, L, cell = config.hidden_size, config.num_layers, config.cell
    step = STEPS[cell]
    out = {}
    for b in range(B):
        for k in range(L):
            out[k, -1, b] = (np.concatenate([part[k, b] for part in hidden]), None, None, None)
        for t in range(T):
            below = params["encoder.weight"][ids[t, b]]
            for k in range(L):
                w_ih = params.get(f"rnn.weight_ih_l{k}")
                xin = below if w_ih is None else w_ih @ below
                b_ih = params.get(f"rnn.bias_ih_l{k}")
                b_hh = params.get(f"rnn.bias_hh_l{k}")
                if b_ih is not None:
                    xin = xin + b_ih
                if b_hh is None:
                    b_hh = np.zeros(xin.shape)
                state, d_prev, d_xin, acts = step(xin, out[k, t - 1, b][0], params[f"rnn.weight_hh_l{k}"], b_hh)
                out[k, t, b] = (state, d_prev, None if k == 0 else d_xin @ w_ih, acts)
                below = state[:H]
    return out


def reference_gradients(params, config, ids, hidden, positions, max_lag):
    """(L, P, K+1, R, H) as gradients_by_lag's, from products of the explicit Jacobians.

    The recursion runs on the state's partial derivatives, (h, c) as the step's Jacobians see them; the
    LSTM's c gradient reported is the whole one, with c_s's path through its own step's h_s added."""
    T, B = ids.shape
    H, L, P = config.hidden_size, config.num_layers, PARTS[config.cell]
    trace = reference_forward(params, config, ids[:-1], hidden)
    grads = np.zeros((L, P, max_lag + 1, len(positions) * B, H))
    for i, t in enumerate(positions):
        for b in range(B):
            top_h = trace[L - 1, t, b][0][:H]
            logits = params["decoder.weight"] @ top_h + params.get("decoder.bias", 0.0)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            p[ids[t + 1, b]] -= 1
            grad = {}  # (layer, step) -> d loss_t / d state (P*H,)
            for s in range(t, t - max_lag - 1, -1):
                for k in range(L - 1, -1, -1):
                    g = np.zeros(P * H)
                    if k == L - 1 and s == t:
                        g[:H] += params["decoder.weight"].T @ p
                    if s < t:  # through the same layer's next step
                        g += trace[k, s + 1, b][1].T @ grad[k, s + 1]
                    if k < L - 1:  # through the layer above at the same step
                        g[:H] += trace[k + 1, s, b][2].T @ grad[k + 1, s]
                    grad[k, s] = g
                    grads[k, :, t - s, i * B + b] = g.reshape(P, H)
                    if config.cell == "lstm":  # c_s reaches the loss through h_s = o tanh(c_s) too
                        acts = trace[k, s, b][3]
                        grads[k, 1, t - s, i * B + b] += g[:H] * acts["o"] * (1 - acts["tanh(c)"] ** 2)
    return grads


def random_model(cell, num_layers, *, embed_size=3, bias=True, hidden_size=4, vocab_size=7, seed=0, scale=0.7):
    """A float64 model with normal(0, scale) parameters: larger than the default initialisation, so that
    the gradient still reaches many steps back."""
    model = LanguageModel(vocab_size, hidden_size, embed_size=embed_size, cell=cell, num_layers=num_layers,
                          bias=bias, dtype="float64", seed=seed)
    gen = np.random.default_rng(seed + 100)
    model.load_params({name: gen.normal(0, scale, value.shape) for name, value in model.params.items()})
    return model


def random_sample(model, T, B, seed=1):
    gen = np.random.default_rng(seed)
    ids = gen.integers(0, model.vocab_size, size=(T, B))
    c = model.config
    hidden = tuple(gen.normal(0, 0.5, (c.num_layers, B, c.hidden_size)) for _ in c.cell_type.state)
    return ids, hidden


CASES = [("rnn", 1), ("rnn", 2), ("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2)]


@pytest.mark.parametrize("cell,num_layers", CASES)
def test_gradients_by_lag_equal_products_of_explicit_jacobians(cell, num_layers):
    # one layer in the tutorial's shape (no embedding layer, no bias), two with both
    model = random_model(cell, num_layers, embed_size=None if num_layers == 1 else 3, bias=num_layers > 1)
    ids, hidden = random_sample(model, T=12, B=3)
    max_lag = 6
    lag_grads = gradients_by_lag(model.params, model.config, ids, max_lag=max_lag, positions=3,
                                 hidden=model.config.cell_type.hidden(hidden))
    assert lag_grads.positions == (6, 8, 10)  # the first window starts at step 0, from ``hidden``
    expected = reference_gradients(model.params, model.config, ids, hidden, lag_grads.positions, max_lag)
    assert lag_grads.grads.shape == expected.shape
    assert np.abs(expected[:, :, -1]).max() > 1e-4  # the last lag is still far from zero
    np.testing.assert_allclose(lag_grads.grads, expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("cell,num_layers", CASES)
def test_curves_are_mean_norms_over_rows_relative_to_lag_zero(cell, num_layers):
    model = random_model(cell, num_layers)
    ids, _ = random_sample(model, T=10, B=2)
    lag_grads = gradients_by_lag(model.params, model.config, ids, max_lag=4, positions=(4, 7))
    curves = lag_curves(lag_grads, threshold=0.05)
    parts = model.config.cell_type.state
    assert [(c.layer, c.part) for c in curves] == [(k, p) for k in range(num_layers) for p in parts]
    for c in curves:
        g = lag_grads.grads[c.layer, parts.index(c.part)]  # (K+1, R, H)
        mean_norm = np.array([np.mean([np.linalg.norm(row) for row in g[k]]) for k in range(5)])
        lag0 = np.mean([np.linalg.norm(row) for row in lag_grads.grads[c.layer, 0, 0]])
        np.testing.assert_allclose(c.mean_norm, mean_norm, rtol=1e-12)
        np.testing.assert_allclose(c.ratio, mean_norm / lag0, rtol=1e-12)
        assert c.effective_memory == effective_memory(c.ratio, 0.05)
    assert curves[0].ratio[0] == 1.0


@pytest.mark.parametrize("softmax", ["full", "class", "adaptive"])
def test_lag_zero_is_the_output_layers_gradient(softmax):
    """Every output layer: d loss_t / d h_t against central differences of the layer's own per-row NLL."""
    from rnnlab.diagnose import trace_layers

    model = LanguageModel(50, 16, embed_size=8, cell="gru", softmax=softmax, dtype="float64", seed=0,
                          cutoffs=() if softmax == "full" else (10, 30), div_value=2.0)
    ids = np.random.default_rng(0).integers(0, 50, size=(9, 3))
    t = 7
    lag_grads = gradients_by_lag(model.params, model.config, ids, max_lag=2, positions=(t,))
    top = trace_layers(model.params, model.config, ids[:-1])[-1].states[0][t + 1]  # h_t, (B, H)
    eps = 1e-6
    for b in range(3):
        expected = []
        for j in range(16):
            shift = np.zeros((1, 16))
            shift[0, j] = eps
            up, down = (model.output.nll(model.params, top[b:b + 1] + sign * shift, ids[t + 1, b:b + 1])[0]
                        for sign in (1, -1))
            expected.append((up - down) / (2 * eps))
        np.testing.assert_allclose(lag_grads.grads[0, 0, 0, b], expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_tanh_rnn_without_recurrent_weights_forgets_at_once(num_layers):
    model = random_model("rnn", num_layers)
    for k in range(num_layers):
        model.params[f"rnn.weight_hh_l{k}"][:] = 0.0
    ids, _ = random_sample(model, T=14, B=3)
    result = diagnose(model, ids, max_lag=5, positions=4)
    for curve in result.curves:
        assert curve.mean_norm[0] > 0
        assert curve.ratio[0] == 1.0
        assert all(r == 0.0 for r in curve.ratio[1:])
        assert curve.effective_memory == 0


def test_linear_decay_gives_the_known_ratio_and_memory():
    """h stays 0 (no input, no bias), so tanh' = 1 and d h_t / d h_(t-k) = W^k = 0.5^k."""
    model = random_model("rnn", 1, hidden_size=3)
    model.params["encoder.weight"][:] = 0.0
    model.params["rnn.bias_ih_l0"][:] = 0.0
    model.params["rnn.bias_hh_l0"][:] = 0.0
    model.params["rnn.weight_hh_l0"][:] = 0.5 * np.eye(3)
    ids, _ = random_sample(model, T=30, B=2)
    result = diagnose(model, ids, max_lag=20, threshold=1e-3, positions=3)
    np.testing.assert_allclose(result.curve().ratio, 0.5 ** np.arange(21), rtol=1e-12)
    assert result.effective_memory == 9  # 0.5^9 = 1.95e-3 > 1e-3 > 0.5^10


def test_lstm_memory_cell_path_carries_the_forget_gate():
    """No recurrent weights: the h path ends at lag 0; c stays 0 (g = 0), so d h_t / d c_t = o and
    the c path decays as o f^k."""
    model = random_model("lstm", 1, hidden_size=3)
    H = 3
    model.params["encoder.weight"][:] = 0.0
    model.params["rnn.weight_hh_l0"][:] = 0.0
    bias = np.zeros(4 * H)
    bias[H:2 * H] = np.log(0.9 / 0.1)  # f = 0.9
    bias[3 * H:] = np.log(0.25 / 0.75)  # o = 0.25
    model.params["rnn.bias_ih_l0"][:] = bias
    model.params["rnn.bias_hh_l0"][:] = 0.0
    ids, _ = random_sample(model, T=70, B=2)
    result = diagnose(model, ids, max_lag=60, threshold=1e-3, positions=3)
    h, c = result.curve(0, "h"), result.curve(0, "c")
    assert h.ratio[0] == 1.0 and all(r == 0.0 for r in h.ratio[1:])
    np.testing.assert_allclose(c.ratio, 0.25 * 0.9 ** np.arange(61), rtol=1e-10)
    assert c.effective_memory == 52  # 0.25 * 0.9^52 = 1.05e-3 > 1e-3 > 0.25 * 0.9^53
    assert h.effective_memory == 0


def test_effective_memory_is_the_last_lag_above_the_threshold():
    assert effective_memory([1.0, 0.5, 1e-2, 1e-4, 2e-3], 1e-3) == 4
    assert effective_memory([1.0, 0.5, 1e-2, 1e-4, 1e-3], 1e-3) == 2  # equal is not above
    assert effective_memory([1.0, 1e-4], 1e-3) == 0
    assert effective_memory([0.0, 0.0], 1e-3) == 0


def test_sample_positions_spread_over_the_usable_steps():
    assert sample_positions(20, 5, 4) == (5, 9, 14, 18)
    assert sample_positions(8, 6, 5) == (6,)
    with pytest.raises(ValueError, match="too short"):
        sample_positions(7, 6, 2)
    model = random_model("rnn", 1)
    with pytest.raises(ValueError, match="positions must lie"):
        gradients_by_lag(model.params, model.config, np.zeros((10, 2), dtype=int), max_lag=3, positions=(2, 5))


# -- spectra and saturation ----------------------------------------------------------------


def test_singular_values_of_the_whole_matrix_and_each_gate_block():
    model = random_model("lstm", 2, hidden_size=3)
    scales = (2.0, 3.0, 0.5, 1.0)
    model.params["rnn.weight_hh_l1"][:] = np.vstack([s * np.eye(3) for s in scales])
    result = diagnose(model, random_sample(model, T=8, B=2)[0], max_lag=2, top_singular=2)
    top = result.spectra[1]
    np.testing.assert_allclose(top.whole, [np.sqrt(sum(s * s for s in scales))] * 2, rtol=1e-12)
    assert list(top.blocks) == ["i", "f", "g", "o"]
    for name, s in zip("ifgo", scales):
        np.testing.assert_allclose(top.blocks[name], [s, s], rtol=1e-12)
    bottom = model.params["rnn.weight_hh_l0"]
    np.testing.assert_allclose(result.spectra[0].whole, np.linalg.svd(bottom, compute_uv=False)[:2], rtol=1e-12)
    rnn = diagnose(random_model("rnn", 1), random_sample(model, T=8, B=2)[0], max_lag=2)
    assert rnn.spectra[0].blocks == {} and len(rnn.spectra[0].whole) == 3


def test_saturated_share_thresholds():
    assert saturated_share(np.array([0.995, -0.999, 0.98, 0.0]), "tanh") == 0.5
    assert saturated_share(np.array([0.005, 0.995, 0.5, 0.02]), "sigmoid") == 0.5
    with pytest.raises(ValueError):
        saturated_share(np.zeros(2), "relu")


@pytest.mark.parametrize("cell,num_layers", CASES)
def test_saturation_matches_the_activations_of_the_equations(cell, num_layers):
    model = random_model(cell, num_layers, scale=2.0)  # large weights: many saturated units
    ids, hidden = random_sample(model, T=15, B=3)
    result = diagnose(model, ids, max_lag=3, hidden=model.config.cell_type.hidden(hidden))
    trace = reference_forward(model.params, model.config, ids[:-1], hidden)
    kinds = {"h": "tanh", "g": "tanh", "n": "tanh", "tanh(c)": "tanh"}
    for k, shares in enumerate(result.saturation):
        for name, share in shares.items():
            values = np.array([trace[k, t, b][3][name] for t in range(14) for b in range(3)])
            assert share == saturated_share(values, kinds.get(name, "sigmoid")), (k, name)
    assert any(share > 0.1 for shares in result.saturation for share in shares.values())


def test_saturation_on_constructed_gates():
    """No recurrent weights, no input: the pre-activations are the biases, unit by unit."""
    H = 4
    cases = {
        "rnn": ([10.0, -10.0, 0.0, 1.0], {"h": 0.5}),
        "gru": ([20, 20, 0, 0, -20, 0, 0, 0, 0, 0, 0, 0], {"r": 0.5, "z": 0.25, "n": 0.0}),
        "lstm": ([20, 20, 20, 0, -20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], {"i": 0.75, "f": 0.25, "g": 0.0,
                                                                        "o": 0.0, "tanh(c)": 0.0}),
    }
    for cell, (bias, expected) in cases.items():
        model = random_model(cell, 1, hidden_size=H)
        model.params["encoder.weight"][:] = 0.0
        model.params["rnn.weight_hh_l0"][:] = 0.0
        model.params["rnn.bias_ih_l0"][:] = bias
        model.params["rnn.bias_hh_l0"][:] = 0.0
        result = diagnose(model, random_sample(model, T=6, B=2)[0], max_lag=2)
        assert result.saturation[0] == expected, cell


# -- the report ------------------------------------------------------------------------------


def test_report_as_json_and_as_a_table():
    model = random_model("lstm", 2)
    result = diagnose(model, random_sample(model, T=40, B=2)[0], max_lag=25, positions=2, label="small lstm")
    assert isinstance(result, Diagnosis) and result.rows == 4 and result.positions == (25, 38)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["label"] == "small lstm" and data["cell"] == "lstm"
    assert [(c["layer"], c["part"]) for c in data["curves"]] == [(0, "h"), (0, "c"), (1, "h"), (1, "c")]
    assert len(data["curves"][0]["ratio"]) == 26 and data["curves"][0]["ratio"][0] == 1.0
    assert data["effective_memory"] == result.curve(1, "h").effective_memory
    assert set(data["saturation"][0]) == {"layer", "i", "f", "g", "o", "tanh(c)"}
    assert set(data["singular_values"][1]["blocks"]) == {"i", "f", "g", "o"}
    table = result.format_table()
    lines = table.splitlines()
    assert lines[0].startswith("small lstm: lstm, 2 x 4")
    assert "L0 h" in table and "L1 c" in table
    lag_rows = [line.split()[0] for line in lines if line[:5].strip().isdigit()]
    assert lag_rows == [str(k) for k in list(range(11)) + [15, 20, 25]]
    assert "effective memory" in table and "saturated units" in table and "singular values" in table


def test_cli_sized_run_is_quick():
    """H = 200, K = 50, 8 positions x 16 rows, LSTM: the window's tape in a fraction of a second."""
    model = LanguageModel(65, 200, embed_size=32, cell="lstm", seed=0)
    ids = np.random.default_rng(0).integers(0, 65, size=(120, 16))
    start = time.perf_counter()
    result = diagnose(model, ids, max_lag=50)
    seconds = time.perf_counter() - start
    print(f"lstm H=200 K=50: {seconds:.2f} s")
    assert result.rows == 128 and seconds < 20


# -- the direction on real text -------------------------------------------------------------------


def train_briefly(cell, stream, *, hidden_size=64, steps=400, bptt=64, seed=0):
    """Adam at 0.003 with clipping to 1 on chunks of a (T, B) stream: the ``chars`` recipe, briefly."""
    from rnnlab.optim import Adam, clip_grad_norm

    model = LanguageModel(int(stream.max()) + 1, hidden_size, embed_size=16, cell=cell, seed=seed)
    optimizer = Adam(model.params, lr=0.003)
    hidden, start = None, 0
    for _ in range(steps):
        if start + bptt + 1 > len(stream):
            start, hidden = 0, None
        result = model.loss_and_grads(stream[start:start + bptt], stream[start + 1:start + bptt + 1],
                                      bptt="chunk", hidden=hidden)
        start, hidden = start + bptt, result.hidden
        clip_grad_norm(result.grads, 1.0)
        optimizer.step(result.grads)
    return model, result.loss


def test_lstm_remembers_longer_than_a_tanh_rnn_on_shakespeare(data_dir):
    path = data_dir / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from rnnlab.data.batching import batchify
    from rnnlab.data.prepare import prepare_corpus

    ids = prepare_corpus(path, "chars").ids
    stream = batchify(ids[:300_000], 16)
    sample = batchify(ids[-20_000:], 20)[:200]
    memory = {}
    for cell in ("rnn", "lstm"):
        model, loss = train_briefly(cell, stream)
        result = diagnose(model, sample, max_lag=80, positions=6)
        memory[cell] = result.effective_memory
        print(f"{cell}: training loss {loss:.3f}, effective memory {result.effective_memory}, "
              f"ratio at lag 10 {result.curve().ratio[10]:.2e}")
    assert memory["rnn"] < memory["lstm"]


# -- a peer: PyTorch's cells and autograd -------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("cell,num_layers", CASES)
def test_gradients_by_lag_equal_torch_autograd(cell, num_layers, torch_float64):
    """The same window on torch's RNNCell / LSTMCell / GRUCell, layer by layer, with every state a leaf
    of its own step: torch.autograd.grad of loss_t at each state."""
    import torch
    from torch.nn import functional as F

    model = random_model(cell, num_layers)
    ids, hidden = random_sample(model, T=11, B=2)
    max_lag, t = 6, 9
    lag_grads = gradients_by_lag(model.params, model.config, ids, max_lag=max_lag, positions=(t,),
                                 hidden=model.config.cell_type.hidden(hidden))
    p = {name: torch.tensor(value) for name, value in model.params.items()}
    cells = []
    for k in range(num_layers):
        torch_cell = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell](
            3 if k == 0 else 4, 4)
        torch_cell.load_state_dict({f"{name}": p[f"rnn.{name}_l{k}"]
                                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        cells.append(torch_cell)
    state = [tuple(torch.tensor(part[k]) for part in hidden) for k in range(num_layers)]
    nodes = {}
    for s in range(t + 1):
        below = p["encoder.weight"][torch.as_tensor(ids[s])]
        for k in range(num_layers):
            if s == t - max_lag:  # the window starts here: the states before it become leaves
                state[k] = tuple(part.detach().requires_grad_() for part in state[k])
            out = cells[k](below, state[k] if cell == "lstm" else state[k][0])
            state[k] = out if cell == "lstm" else (out,)
            if s >= t - max_lag:
                for part in state[k]:
                    part.retain_grad()
                nodes[k, s] = state[k]
            below = state[k][0]
    logits = below @ p["decoder.weight"].T + p["decoder.bias"]
    F.cross_entropy(logits, torch.as_tensor(ids[t + 1]), reduction="sum").backward()
    for (k, s), parts in nodes.items():
        for j, part in enumerate(parts):
            expected = part.grad.numpy() if part.grad is not None else np.zeros(part.shape)
            np.testing.assert_allclose(lag_grads.grads[k, j, t - s], expected, rtol=1e-10, atol=1e-13,
                                       err_msg=f"layer {k}, part {j}, lag {t - s}")
