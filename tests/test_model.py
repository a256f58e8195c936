"""LanguageModel: parameters, gradients by finite differences in every BPTT mode, masks, carry, forward paths."""
import numpy as np
import pytest

from rnnlab import LanguageModel, ModelConfig, loss_and_grads, output
from rnnlab.gradcheck import ModelCase, check_model, model_cases

MODEL_TOL = 1e-6
LAYOUTS = {
    "tutorial": dict(embed_size=None, bias=False),
    "tutorial+bias": dict(embed_size=None, bias=True),
    "embed": dict(embed_size=4, bias=True),
    "embed-nobias-2": dict(embed_size=3, bias=False, num_layers=2),
    "embed+bias-2": dict(embed_size=4, bias=True, num_layers=2),
    "noembed-2": dict(embed_size=None, bias=True, num_layers=2),
}


def make_model(layout="embed+bias-2", V=11, H=5, seed=0, dtype="float64"):
    return LanguageModel(V, H, dtype=dtype, seed=seed, **LAYOUTS[layout])


def batch(model, T=6, B=3, seed=0, masked=False):
    gen = np.random.default_rng(seed)
    V = model.vocab_size
    inputs = gen.integers(0, V, (T, B))
    targets = gen.integers(0, V, (T, B))
    mask = (gen.random((T, B)) < 0.6).astype(np.float64) if masked else None
    if masked:
        mask[0, 0] = 1.0
    hidden = gen.standard_normal((model.config.num_layers, B, model.hidden_size)) * 0.5
    return inputs, targets, mask, hidden


def assert_grads_close(g1, g2, rtol=1e-12, atol=1e-15):
    assert set(g1) == set(g2)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=rtol, atol=atol, err_msg=k)


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("embed", [None, 4])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_param_names_and_shapes(embed, bias, layers):
    V, H = 13, 6
    model = LanguageModel(V, H, embed_size=embed, bias=bias, num_layers=layers, dtype="float64")
    expected = {"encoder.weight": (V, embed or H), "decoder.weight": (V, H), "rnn.weight_hh_l0": (H, H)}
    if embed is not None:
        expected["rnn.weight_ih_l0"] = (H, embed)
    if layers == 2:
        expected["rnn.weight_ih_l1"] = (H, H)
        expected["rnn.weight_hh_l1"] = (H, H)
    if bias:
        expected["decoder.bias"] = (V,)
        for k in range(layers):
            expected[f"rnn.bias_ih_l{k}"] = (H,)
            expected[f"rnn.bias_hh_l{k}"] = (H,)
    assert {k: v.shape for k, v in model.params.items()} == expected
    assert model.config.param_shapes() == expected
    assert all(v.dtype == np.float64 for v in model.params.values())
    assert model.num_params() == sum(int(np.prod(s)) for s in expected.values())
    # the gradients come back under the same names and shapes
    inputs, targets, _, _ = batch(model, T=3, B=2)
    grads = model.loss_and_grads(inputs, targets).grads
    assert {k: v.shape for k, v in grads.items()} == expected


def test_init_is_seeded_and_within_bounds():
    a, b = make_model("tutorial", seed=3), make_model("tutorial", seed=3)
    c = make_model("tutorial", seed=4)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["rnn.weight_hh_l0"], c.params["rnn.weight_hh_l0"])
    for layout in LAYOUTS:
        if LAYOUTS[layout]["bias"]:
            assert not make_model(layout).params["decoder.bias"].any()  # the decoder's bias starts at zero
    m = LanguageModel(50, 8, dtype="float32")
    assert m.params["encoder.weight"].dtype == np.float32
    assert np.abs(m.params["encoder.weight"]).max() <= np.sqrt(1 / 50)
    assert np.abs(m.params["decoder.weight"]).max() <= np.sqrt(1 / 8)


def test_config_validation():
    for bad in (dict(vocab_size=0, hidden_size=3), dict(vocab_size=3, hidden_size=-1),
                dict(vocab_size=3, hidden_size=3, embed_size=0), dict(vocab_size=3, hidden_size=3, cell="lstmx"),
                dict(vocab_size=3, hidden_size=3, num_layers=0), dict(vocab_size=3, hidden_size=3, dtype="int8")):
        with pytest.raises(ValueError):
            ModelConfig(**bad)
    config = ModelConfig(7, 3, embed_size=2, num_layers=2, bias=False, dtype="float64")
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_load_params_checks_names_and_shapes():
    model = make_model("embed")
    params = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="missing"):
        model.load_params({k: v for k, v in params.items() if k != "decoder.bias"})
    with pytest.raises(ValueError, match="shape"):
        model.load_params({**params, "decoder.weight": np.zeros((3, 3))})
    other = LanguageModel.from_config(model.config, params)
    for k in params:
        np.testing.assert_array_equal(other.params[k], params[k])


# ---------------------------------------------------------------- finite differences

CASES = model_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.label}|{c.bptt}|{'masked' if c.masked else 'plain'}"
                                             for c in CASES])
def test_model_gradients_match_finite_differences(case):
    errors = check_model(case)
    assert set(errors) == set(case.model.params)
    for name, err in errors.items():
        assert err < MODEL_TOL, f"{name}: {err:.2e}"


EXTRA = [
    # layouts and modes model_cases() leaves out: window with an input projection and biases,
    # chunk/window with a truncation that does not divide T, and a long truncation.
    ("embed", "window", 2, True), ("embed", "window", 3, False), ("tutorial+bias", "window", 1, True),
    ("embed", "chunk", 2, False), ("noembed-2", "chunk", 4, True), ("embed-nobias-2", "full", None, True),
    ("tutorial", "window", 10, False), ("tutorial", "chunk", 1, False),
]


@pytest.mark.parametrize("layout,bptt,truncate,masked", EXTRA)
def test_more_model_gradients_match_finite_differences(layout, bptt, truncate, masked):
    case = ModelCase(layout, make_model(layout, seed=5), bptt, truncate, masked)
    errors = check_model(case, T=7, B=2, seed=1)
    for name, err in errors.items():
        assert err < MODEL_TOL, f"{name}: {err:.2e}"


def test_modes_differ_so_the_checks_are_not_vacuous():
    model = make_model("tutorial+bias")
    inputs, targets, _, hidden = batch(model, T=8, B=2)
    g = {m: model.loss_and_grads(inputs, targets, bptt=m, truncate=k, hidden=hidden).grads
         for m, k in (("full", None), ("chunk", 3), ("window", 2))}
    w = "rnn.weight_hh_l0"
    assert np.abs(g["full"][w] - g["chunk"][w]).max() > 1e-6
    assert np.abs(g["full"][w] - g["window"][w]).max() > 1e-6
    assert np.abs(g["chunk"][w] - g["window"][w]).max() > 1e-6
    # the decoder's gradient does not depend on the truncation
    for m in ("chunk", "window"):
        np.testing.assert_allclose(g[m]["decoder.weight"], g["full"]["decoder.weight"], rtol=1e-12)


# ---------------------------------------------------------------- masks


MODES_BY_LAYOUT = [("tutorial", "full", None), ("tutorial", "chunk", 2), ("tutorial", "window", 2),
                   ("embed", "window", 3), ("embed+bias-2", "full", None), ("embed+bias-2", "chunk", 3)]


@pytest.mark.parametrize("layout,bptt,truncate", MODES_BY_LAYOUT)
def test_masked_targets_do_not_matter(layout, bptt, truncate):
    model = make_model(layout)
    inputs, targets, mask, hidden = batch(model, masked=True)
    kw = dict(mask=mask, bptt=bptt, truncate=truncate, hidden=hidden)
    a = model.loss_and_grads(inputs, targets, **kw)
    other = targets.copy()
    other[mask == 0] = (other[mask == 0] + 3) % model.vocab_size
    assert (other != targets).any()
    b = model.loss_and_grads(inputs, other, **kw)
    assert a.loss == b.loss
    assert_grads_close(a.grads, b.grads, rtol=0, atol=0)
    # and an unmasked target does matter
    c_t = targets.copy()
    i, j = np.argwhere(mask != 0)[0]
    c_t[i, j] = (c_t[i, j] + 1) % model.vocab_size
    assert model.loss_and_grads(inputs, c_t, **kw).loss != a.loss


@pytest.mark.parametrize("layout,bptt,truncate", MODES_BY_LAYOUT)
def test_padding_with_mask_zero_is_invisible(layout, bptt, truncate):
    model = make_model(layout, seed=2)
    T, B = 6, 3
    inputs, targets, _, hidden = batch(model, T=T, B=B, seed=4)
    kw = dict(bptt=bptt, truncate=truncate)
    ref = model.loss_and_grads(inputs, targets, hidden=hidden, **kw)
    gen = np.random.default_rng(9)
    L = model.config.num_layers

    # padding at the end of time (padded sentences)
    pad_in = np.concatenate([inputs, gen.integers(0, model.vocab_size, (3, B))])
    pad_tg = np.concatenate([targets, gen.integers(0, model.vocab_size, (3, B))])
    mask = np.concatenate([np.ones((T, B)), np.zeros((3, B))])
    got = model.loss_and_grads(pad_in, pad_tg, mask=mask, hidden=hidden, **kw)
    assert got.loss == pytest.approx(ref.loss, rel=1e-13)
    assert_grads_close(got.grads, ref.grads)

    # padding sequences appended to the batch
    pad_in = np.concatenate([inputs, gen.integers(0, model.vocab_size, (T, 2))], axis=1)
    pad_tg = np.concatenate([targets, gen.integers(0, model.vocab_size, (T, 2))], axis=1)
    mask = np.concatenate([np.ones((T, B)), np.zeros((T, 2))], axis=1)
    pad_h = np.concatenate([hidden, gen.standard_normal((L, 2, model.hidden_size))], axis=1)
    got = model.loss_and_grads(pad_in, pad_tg, mask=mask, hidden=pad_h, **kw)
    assert got.loss == pytest.approx(ref.loss, rel=1e-13)
    assert_grads_close(got.grads, ref.grads)
    np.testing.assert_allclose(got.hidden[:, :B], ref.hidden, rtol=1e-13)


def test_mask_is_mean_over_unmasked_targets():
    model = make_model("embed")
    inputs, targets, mask, hidden = batch(model, masked=True)
    res = model.loss_and_grads(inputs, targets, mask=mask, hidden=hidden)
    nll, _ = model.nll(inputs, targets, hidden=hidden)
    assert res.loss == pytest.approx(nll[mask != 0].sum() / (mask != 0).sum(), rel=1e-13)
    # any nonzero value counts as 1
    res2 = model.loss_and_grads(inputs, targets, mask=mask * 7.5, hidden=hidden)
    assert res2.loss == pytest.approx(res.loss, rel=1e-14)
    # fully masked: zero loss, zero gradients
    zero = model.loss_and_grads(inputs, targets, mask=np.zeros_like(mask), hidden=hidden)
    assert zero.loss == 0.0
    assert all(not g.any() for g in zero.grads.values())


@pytest.mark.parametrize("bptt,truncate", [("full", None), ("chunk", 2), ("window", 3)])
@pytest.mark.parametrize("masked", [False, True])
def test_sum_reduction_is_count_times_mean(bptt, truncate, masked):
    model = make_model("tutorial+bias")
    inputs, targets, mask, hidden = batch(model, T=7, B=2, masked=masked)
    kw = dict(mask=mask, bptt=bptt, truncate=truncate, hidden=hidden)
    mean = model.loss_and_grads(inputs, targets, **kw)
    total = model.loss_and_grads(inputs, targets, reduction="sum", **kw)
    count = inputs.size if mask is None else int((mask != 0).sum())
    assert total.loss == pytest.approx(count * mean.loss, rel=1e-13)
    for k in mean.grads:
        np.testing.assert_allclose(total.grads[k], count * mean.grads[k], rtol=1e-12, atol=1e-14, err_msg=k)


# ---------------------------------------------------------------- carrying the hidden state


@pytest.mark.parametrize("layout", ["tutorial", "embed+bias-2"])
def test_two_halves_with_carried_hidden_equal_one_call(layout):
    model = make_model(layout, seed=7)
    inputs, targets, _, hidden = batch(model, T=8, B=3, seed=7)
    whole = model.loss_and_grads(inputs, targets, hidden=hidden)
    first = model.loss_and_grads(inputs[:4], targets[:4], hidden=hidden)
    second = model.loss_and_grads(inputs[4:], targets[4:], hidden=first.hidden)
    assert whole.loss == pytest.approx((first.loss + second.loss) / 2, rel=1e-13)
    np.testing.assert_allclose(second.hidden, whole.hidden, rtol=1e-13)
    assert whole.hidden.shape == (model.config.num_layers, 3, model.hidden_size)
    # the final hidden is the last state of every layer: log_probs' final agrees
    _, final = model.log_probs(inputs, hidden=hidden)
    np.testing.assert_allclose(final, whole.hidden, rtol=1e-14)


@pytest.mark.parametrize("layout", ["tutorial", "embed+bias-2", "noembed-2"])
@pytest.mark.parametrize("T,K", [(8, 4), (9, 4), (6, 1), (5, 5)])
@pytest.mark.parametrize("masked", [False, True])
def test_chunk_mode_equals_chunk_by_chunk_calls(layout, T, K, masked):
    model = make_model(layout, seed=8)
    inputs, targets, mask, hidden = batch(model, T=T, B=2, seed=T * K, masked=masked)
    whole = model.loss_and_grads(inputs, targets, mask=mask, bptt="chunk", truncate=K, hidden=hidden,
                                 reduction="sum")
    h, loss, grads = hidden, 0.0, {k: np.zeros_like(v) for k, v in model.params.items()}
    for lo in range(0, T, K):
        part = model.loss_and_grads(inputs[lo:lo + K], targets[lo:lo + K],
                                    mask=None if mask is None else mask[lo:lo + K],
                                    bptt="full", hidden=h, reduction="sum")
        loss += part.loss
        for k in grads:
            grads[k] += part.grads[k]
        h = part.hidden
    assert whole.loss == pytest.approx(loss, rel=1e-13)
    assert_grads_close(whole.grads, grads, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(whole.hidden, h, rtol=1e-13)


def test_hidden_none_is_zeros_and_hidden_is_not_modified():
    model = make_model("embed+bias-2")
    inputs, targets, _, hidden = batch(model)
    zeros = np.zeros_like(hidden)
    a = model.loss_and_grads(inputs, targets)
    b = model.loss_and_grads(inputs, targets, hidden=zeros)
    assert a.loss == b.loss
    assert_grads_close(a.grads, b.grads, rtol=0, atol=0)
    np.testing.assert_array_equal(model.init_hidden(3), zeros)
    before = hidden.copy()
    params = {k: v.copy() for k, v in model.params.items()}
    res = model.loss_and_grads(inputs, targets, hidden=hidden, bptt="chunk", truncate=2)
    np.testing.assert_array_equal(hidden, before)
    for k in params:
        np.testing.assert_array_equal(model.params[k], params[k])
    # a pure function: called twice, the same numbers
    again = model.loss_and_grads(inputs, targets, hidden=hidden, bptt="chunk", truncate=2)
    assert res.loss == again.loss
    assert_grads_close(res.grads, again.grads, rtol=0, atol=0)
    # and the module-level function is the same computation
    pure = loss_and_grads(model.params, model.config, inputs, targets, hidden=hidden, bptt="chunk",
                          truncate=2)
    assert pure.loss == res.loss


# ---------------------------------------------------------------- forward-only paths


@pytest.mark.parametrize("layout", ["tutorial", "embed+bias-2", "embed-nobias-2"])
def test_nll_evaluate_log_probs_agree(layout):
    model = make_model(layout, V=23)
    inputs, targets, mask, hidden = batch(model, T=5, B=4, masked=True)
    logp, final_lp = model.log_probs(inputs, hidden=hidden)
    assert logp.shape == (5, 4, 23)
    np.testing.assert_allclose(np.exp(logp).sum(axis=-1), 1.0, rtol=1e-13)
    nll, final_nll = model.nll(inputs, targets, hidden=hidden)
    assert nll.shape == (5, 4)
    picked = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(nll, picked, rtol=1e-13)
    np.testing.assert_array_equal(final_lp, final_nll)

    total, count, final_ev = model.evaluate(inputs, targets, hidden=hidden)
    assert count == 20 and total == pytest.approx(nll.sum(), rel=1e-13)
    res = model.loss_and_grads(inputs, targets, hidden=hidden)
    assert res.loss == pytest.approx(total / count, rel=1e-13)
    np.testing.assert_allclose(res.hidden, final_ev, rtol=1e-14)

    total_m, count_m, _ = model.evaluate(inputs, targets, mask=mask, hidden=hidden)
    assert count_m == int((mask != 0).sum())
    assert total_m == pytest.approx(nll[mask != 0].sum(), rel=1e-13)
    res_m = model.loss_and_grads(inputs, targets, mask=mask, hidden=hidden)
    assert res_m.loss == pytest.approx(total_m / count_m, rel=1e-13)


def test_nll_of_a_long_batch_matches_log_probs():
    """More rows (T * B) than nll's block of logits holds."""
    model = make_model("embed", V=9)
    inputs, targets, _, hidden = batch(model, T=300, B=5, seed=3)
    nll, final = model.nll(inputs, targets, hidden=hidden)
    logp, final_lp = model.log_probs(inputs, hidden=hidden)
    np.testing.assert_allclose(nll, -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], rtol=1e-12)
    np.testing.assert_array_equal(final, final_lp)
    assert model.loss_and_grads(inputs, targets, hidden=hidden).loss == pytest.approx(nll.mean(), rel=1e-12)


def test_step_matches_log_probs():
    model = make_model("embed+bias-2", V=17)
    inputs, _, _, hidden = batch(model, T=5, B=3)
    logp, final = model.log_probs(inputs, hidden=hidden)
    h = hidden
    for t in range(5):
        lp, h = model.step(inputs[t], h)
        assert lp.shape == (3, 17)
        np.testing.assert_allclose(lp, logp[t], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(h, final, rtol=1e-13)
    # without a hidden state: zeros
    lp0, _ = model.step(inputs[0])
    np.testing.assert_allclose(lp0, model.log_probs(inputs[:1])[0][0], rtol=1e-14)


def test_one_sentence_is_a_batch_of_one():
    model = make_model("tutorial+bias")
    x = np.array([1, 4, 2, 9, 0])
    y = np.array([4, 2, 9, 0, 3])
    m = np.array([1, 1, 0, 1, 1])
    a = model.loss_and_grads(x, y, mask=m)
    b = model.loss_and_grads(x[:, None], y[:, None], mask=m[:, None])
    assert a.loss == b.loss
    assert_grads_close(a.grads, b.grads, rtol=0, atol=0)
    assert model.log_probs(x)[0].shape == (5, 1, 11)
    np.testing.assert_array_equal(model.nll(x, y)[0], model.nll(x[:, None], y[:, None])[0])


@pytest.mark.parametrize("layout", ["tutorial", "embed+bias-2"])
def test_float32_model_agrees_with_float64_copy(layout):
    m32 = make_model(layout, V=40, H=16, dtype="float32", seed=3)
    m64 = LanguageModel.from_config(ModelConfig(**{**m32.config.to_dict(), "dtype": "float64"}),
                                    {k: v.astype(np.float64) for k, v in m32.params.items()})
    inputs, targets, mask, hidden = batch(m32, T=12, B=4, masked=True)
    for bptt, k in (("full", None), ("chunk", 4)):
        r32 = m32.loss_and_grads(inputs, targets, mask=mask, hidden=hidden, bptt=bptt, truncate=k)
        r64 = m64.loss_and_grads(inputs, targets, mask=mask, hidden=hidden, bptt=bptt, truncate=k)
        assert abs(r32.loss - r64.loss) < 1e-5
        for name, g in r32.grads.items():
            assert g.dtype == np.float32, name
            scale = np.abs(r64.grads[name]).max()
            assert np.abs(g - r64.grads[name]).max() <= 1e-4 * scale + 1e-7, name
        assert r32.hidden.dtype == np.float32
    lp32 = m32.log_probs(inputs, hidden=hidden)[0]
    assert lp32.dtype == np.float32
    np.testing.assert_allclose(lp32, m64.log_probs(inputs, hidden=hidden)[0], atol=1e-5)


# ---------------------------------------------------------------- errors


def test_ids_out_of_range_are_value_errors():
    model = make_model("embed")
    inputs, targets, _, _ = batch(model)
    for bad_in, bad_tg in ((inputs + model.vocab_size, targets), (inputs, targets - model.vocab_size),
                           (np.where(inputs == inputs[0, 0], -1, inputs), targets)):
        with pytest.raises(ValueError, match=r"\[0, 11\)"):
            model.loss_and_grads(bad_in, bad_tg)
    with pytest.raises(ValueError):
        model.log_probs(inputs + 100)
    with pytest.raises(ValueError):
        model.nll(inputs, targets + 100)
    with pytest.raises(ValueError):
        model.step(np.array([model.vocab_size]))
    with pytest.raises(ValueError, match="integers"):
        model.loss_and_grads(inputs.astype(np.float64), targets)


def test_window_with_two_layers_is_an_error():
    model = make_model("embed+bias-2")
    inputs, targets, _, _ = batch(model)
    with pytest.raises(ValueError, match="window"):
        model.loss_and_grads(inputs, targets, bptt="window", truncate=2)


def test_shape_and_option_errors():
    model = make_model("embed+bias-2")
    inputs, targets, mask, hidden = batch(model, masked=True)
    with pytest.raises(ValueError, match="targets"):
        model.loss_and_grads(inputs, targets[:-1])
    with pytest.raises(ValueError, match="mask"):
        model.loss_and_grads(inputs, targets, mask=mask[:, :-1])
    with pytest.raises(ValueError, match="hidden"):
        model.loss_and_grads(inputs, targets, hidden=hidden[:1])
    with pytest.raises(ValueError, match="hidden"):
        model.log_probs(inputs, hidden=hidden[:, :2])
    with pytest.raises(ValueError, match=r"\(T, B\)"):
        model.loss_and_grads(inputs[..., None], targets[..., None])
    with pytest.raises(ValueError, match="reduction"):
        model.loss_and_grads(inputs, targets, reduction="none")
    with pytest.raises(ValueError, match="bptt"):
        model.loss_and_grads(inputs, targets, bptt="tbptt")
    with pytest.raises(ValueError, match="truncate"):
        model.loss_and_grads(inputs, targets, bptt="chunk", truncate=0)


def test_empty_sequence_gives_zero_loss_and_the_initial_hidden():
    model = make_model("embed+bias-2")
    empty = np.zeros((0, 2), dtype=np.intp)
    _, _, _, hidden = batch(model, T=1, B=2)
    for bptt, k in (("full", None), ("chunk", 2)):
        res = model.loss_and_grads(empty, empty, hidden=hidden, bptt=bptt, truncate=k)
        assert res.loss == 0.0
        assert all(not g.any() for g in res.grads.values())
        np.testing.assert_array_equal(res.hidden, hidden)
    total, count, final = model.evaluate(empty, empty, hidden=hidden)
    assert (total, count) == (0.0, 0)
    np.testing.assert_array_equal(final, hidden)


def test_log_probs_of_an_empty_sequence():
    model = make_model("embed")
    logp, final = model.log_probs(np.zeros((0, 2), dtype=np.intp))
    assert logp.shape == (0, 2, model.vocab_size)
    np.testing.assert_array_equal(final, model.init_hidden(2))


@pytest.mark.parametrize("bptt,truncate", [("window", 3), ("chunk", 3), ("full", None)])
def test_one_forward_pass_and_one_output_projection_per_call(monkeypatch, bptt, truncate):
    """Window mode neither recomputes the forward pass nor projects a step's output more than once."""
    from rnnlab import cells, output

    calls = {"rnn": 0, "out": 0, "rows": 0}
    rnn_forward, out_forward = cells.RNNSequence.forward, output.LinearSoftmaxCE.forward

    def counting_rnn(self, *a):
        calls["rnn"] += 1
        return rnn_forward(self, *a)

    def counting_out(self, hidden, *a):
        calls["out"] += 1
        calls["rows"] += hidden.shape[0]
        return out_forward(self, hidden, *a)

    monkeypatch.setattr(cells.RNNSequence, "forward", counting_rnn)
    monkeypatch.setattr(output.LinearSoftmaxCE, "forward", counting_out)
    model = make_model("embed", V=50)
    inputs, targets, _, _ = batch(model, T=9, B=2)
    model.loss_and_grads(inputs, targets, bptt=bptt, truncate=truncate)
    assert calls == {"rnn": 1, "out": 1, "rows": 18}


@pytest.mark.parametrize("bptt", ["chunk", "window"])
def test_untruncated_modes(bptt):
    """truncate=None: window is full BPTT; chunk is one chunk (full BPTT from a constant h0)."""
    model = make_model("tutorial+bias")
    inputs, targets, mask, hidden = batch(model, T=7, B=2, masked=True)
    full = model.loss_and_grads(inputs, targets, mask=mask, hidden=hidden)
    other = model.loss_and_grads(inputs, targets, mask=mask, hidden=hidden, bptt=bptt)
    assert other.loss == full.loss
    assert_grads_close(other.grads, full.grads, rtol=1e-13)


# ---------------------------------------------------------------- fused SGD step


def sgd_by_hand(model, lr, inputs, targets, **kw):
    """loss_and_grads, then params -= lr * grads: what sgd_step must equal."""
    res = model.loss_and_grads(inputs, targets, **kw)
    for name, g in res.grads.items():
        model.params[name] -= lr * g
    return res.loss, res.hidden


@pytest.mark.parametrize("layout,bptt,truncate,masked,reduction", [
    ("tutorial", "window", 3, False, "sum"),
    ("tutorial+bias", "window", 2, True, "mean"),
    ("embed", "chunk", 2, True, "mean"),
    ("embed+bias-2", "full", None, False, "sum"),
    ("embed-nobias-2", "chunk", 4, True, "sum"),
    ("noembed-2", "full", None, True, "mean"),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_sgd_step_equals_gradients_then_update(set_threads, layout, bptt, truncate, masked, reduction, threads):
    """Three fused steps in a row (repeated input ids, carried hidden) equal the unfused ones."""
    set_threads(threads)
    fused = make_model(layout, V=1100, H=6)  # 1100 words: two vocabulary parts with 2 threads
    plain = make_model(layout, V=1100, H=6)
    lr = 0.7
    for step in range(3):
        inputs, targets, mask, hidden = batch(fused, T=7, B=3, seed=step, masked=masked)
        inputs[1:3, 0] = inputs[0, 0]  # an encoder row used three times
        kw = dict(mask=mask, bptt=bptt, truncate=truncate, hidden=hidden, reduction=reduction)
        loss, final = fused.sgd_step(inputs, targets, lr, **kw)
        want_loss, want_final = sgd_by_hand(plain, lr, inputs, targets, **kw)
        assert loss == pytest.approx(want_loss, rel=1e-13)
        np.testing.assert_allclose(final, want_final, rtol=1e-13, atol=1e-15)
        assert_grads_close(fused.params, plain.params, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("layout", ["tutorial", "tutorial+bias"])
@pytest.mark.parametrize("threads", [1, 2])
def test_sgd_step_over_weight_blocks_equals_gradients_then_update(monkeypatch, set_threads, layout, threads):
    """A batch of few rows walks the decoder in blocks of 7 rows (a ragged last one) in both
    phases of the fused step; it still equals the unfused step."""
    monkeypatch.setattr(output, "WEIGHT_BLOCK_BYTES", 7 * 7 * 8)
    set_threads(threads)
    fused, plain = make_model(layout, V=1100, H=6), make_model(layout, V=1100, H=6)
    for step in range(2):
        inputs, targets, _, hidden = batch(fused, T=5, B=2, seed=step)
        loss, _ = fused.sgd_step(inputs, targets, 0.3, hidden=hidden, bptt="window", truncate=2)
        want, _ = sgd_by_hand(plain, 0.3, inputs, targets, hidden=hidden, bptt="window", truncate=2)
        assert loss == pytest.approx(want, rel=1e-13)
        assert_grads_close(fused.params, plain.params, rtol=1e-11, atol=1e-14)


def test_the_stepping_output_gate_must_be_the_loss():
    """LinearSoftmaxCE(sgd_lr) steps in its forward, so a backward seeded with anything but 1 is refused."""
    gen = np.random.default_rng(0)
    hidden, weight = gen.standard_normal((3, 4)), gen.standard_normal((5, 4))
    gate = output.LinearSoftmaxCE(sgd_lr=0.1)
    _, saved = gate.forward(hidden, weight, None, np.array([0, 1, 2]), np.ones(3))
    gate.backward(saved, 1.0)
    with pytest.raises(ValueError, match="seeded with 1"):
        gate.backward(saved, 2.0)


def test_sgd_step_moves_every_parameter_and_lowers_the_loss():
    """Not a no-op: every parameter changes, and the loss on the batch falls."""
    model = make_model("embed+bias-2", V=40, H=6)
    inputs, targets, _, _ = batch(model, T=8, B=4)
    start = {k: v.copy() for k, v in model.params.items()}
    first, _ = model.sgd_step(inputs, targets, 0.5)
    for name, value in model.params.items():
        assert not np.array_equal(value, start[name]), name
    for _ in range(5):
        loss, _ = model.sgd_step(inputs, targets, 0.5)
    assert loss < first


@pytest.mark.parametrize("layout,V,bptt,threads", [
    ("tutorial+bias", 30, "chunk", 2),  # one vocabulary part
    ("tutorial", 1100, "window", 2),  # two parts: the threads see the bad rows when they meet
    ("tutorial", 1100, "window", 1),
])
def test_sgd_step_with_overflowing_logits_equals_the_unfused_step(set_threads, layout, V, bptt, threads):
    """Rows whose exponentials overflow are redone with the shift, before the step; the fused step
    follows them."""
    set_threads(threads)
    fused, plain = make_model(layout, V=V, H=4), make_model(layout, V=V, H=4)
    for model in (fused, plain):
        model.params["decoder.weight"][:, 0] = np.linspace(-900, 900, V)
        model.params["encoder.weight"][:] = 2.0  # saturated states: logits near +-900
    inputs, targets, _, _ = batch(fused, T=5, B=2)
    loss, _ = fused.sgd_step(inputs, targets, 1e-3, bptt=bptt, truncate=2)
    want, _ = sgd_by_hand(plain, 1e-3, inputs, targets, bptt=bptt, truncate=2)
    assert np.isfinite(loss) and loss == pytest.approx(want, rel=1e-12)
    assert_grads_close(fused.params, plain.params, rtol=1e-11, atol=1e-14)


def test_sgd_step_of_an_empty_sequence_changes_nothing():
    model = make_model("embed+bias-2")
    start = {k: v.copy() for k, v in model.params.items()}
    empty = np.zeros((0, 2), dtype=np.intp)
    loss, final = model.sgd_step(empty, empty, 1.0)
    assert loss == 0.0 and final.shape == (2, 2, model.hidden_size)
    assert_grads_close(model.params, start, rtol=0, atol=0)


@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf"), "0.1", None])
def test_sgd_step_rejects_a_bad_learning_rate_and_changes_nothing(lr):
    model = make_model("embed+bias-2")
    start = {k: v.copy() for k, v in model.params.items()}
    inputs, targets, _, _ = batch(model)
    with pytest.raises(ValueError, match="learning rate"):
        model.sgd_step(inputs, targets, lr)
    assert_grads_close(model.params, start, rtol=0, atol=0)


def test_sgd_step_with_bad_ids_raises_before_touching_the_weights():
    model = make_model("embed+bias-2")
    start = {k: v.copy() for k, v in model.params.items()}
    inputs, targets, _, _ = batch(model)
    targets[2, 1] = model.vocab_size  # out of range
    with pytest.raises(ValueError, match="targets must lie in"):
        model.sgd_step(inputs, targets, 0.1)
    assert_grads_close(model.params, start, rtol=0, atol=0)
