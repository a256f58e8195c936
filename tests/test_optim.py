import numpy as np
import pytest

from rnnlab.model import ModelConfig
from rnnlab.errors import CheckpointError
from rnnlab.optim import SGD, Adagrad, Adam, LossHalvingSchedule, clip_grad_norm, make_optimizer

V, H = 7, 5
SHAPES = ModelConfig(V, H, embed_size=H).param_shapes()  # a word_language_model layout
CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("momentum", {"lr": 0.05}),
    ("adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "eps": 1e-6}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}),
]


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def grad_sequence(n, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(n)]


@pytest.mark.peer
@pytest.mark.parametrize("name,kw", CASES)
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    classes = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
               "adam": torch.optim.Adam}
    torch_kw = {"momentum": 0.9, **kw} if name == "momentum" else kw
    params = make_params()
    tparams = {k: torch.tensor(p.copy(), requires_grad=True) for k, p in params.items()}
    ours = make_optimizer(name, params, **kw)
    theirs = classes[name](list(tparams.values()), **torch_kw)
    for grads in grad_sequence(6):
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
        ours.step(grads)
        for k in params:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.peer
def test_clip_matches_torch():
    torch = pytest.importorskip("torch")
    for max_norm in (0.5, 1e3):
        grads = grad_sequence(1)[0]
        tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
        for t, g in zip(tparams, grads.values()):
            t.grad = torch.tensor(g)
        expected = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
        total = clip_grad_norm(grads, max_norm)
        assert total == pytest.approx(float(expected), rel=1e-12)
        for t, g in zip(tparams, grads.values()):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


def test_sgd_by_hand():
    params = make_params()
    start = {k: p.copy() for k, p in params.items()}
    g1, g2 = grad_sequence(2)
    opt = SGD(params, lr=0.1, momentum=0.5, weight_decay=0.01)
    opt.step(g1)
    opt.step(g2)
    for k in params:
        d1 = g1[k] + 0.01 * start[k]
        p1 = start[k] - 0.1 * d1
        buf = 0.5 * d1 + g2[k] + 0.01 * p1
        np.testing.assert_allclose(params[k], p1 - 0.1 * buf, rtol=1e-14)


def test_adagrad_by_hand():
    params = make_params()
    start = {k: p.copy() for k, p in params.items()}
    g1, g2 = grad_sequence(2)
    opt = Adagrad(params, lr=0.1)
    opt.step(g1)
    opt.step(g2)
    for k in params:
        p1 = start[k] - 0.1 * g1[k] / (np.abs(g1[k]) + 1e-10)
        s = g1[k] ** 2 + g2[k] ** 2
        np.testing.assert_allclose(params[k], p1 - 0.1 * g2[k] / (np.sqrt(s) + 1e-10), rtol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    params = make_params()
    start = {k: p.copy() for k, p in params.items()}
    grads = grad_sequence(1)[0]
    Adam(params, lr=0.01).step(grads)
    for k in params:
        np.testing.assert_allclose(start[k] - params[k], 0.01 * np.sign(grads[k]), rtol=1e-5)


def test_float32_stays_float32():
    params = make_params(dtype=np.float32)
    for name in ("sgd", "momentum", "adagrad", "adam"):
        make_optimizer(name, params, lr=0.01).step(grad_sequence(1, dtype=np.float32)[0])
        assert all(p.dtype == np.float32 for p in params.values())


def test_clip_by_hand():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(grads["a"], [3.0 * scale, 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads["b"], [[4.0 * scale]], rtol=1e-15)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "adam"])
def test_state_dict_roundtrip_continues_identically(name):
    grads = grad_sequence(6)
    straight = make_params()
    opt = make_optimizer(name, straight, lr=0.01)
    for g in grads:
        opt.step(g)

    resumed = make_params()
    first = make_optimizer(name, resumed, lr=0.01)
    for g in grads[:3]:
        first.step(g)
    first.lr = 0.02  # a halving trainer changes lr; the state carries it
    arrays, meta = first.state_dict()
    copy = {k: p.copy() for k, p in resumed.items()}
    second = make_optimizer(name, copy, lr=123.0)
    second.load_state_dict(arrays, meta)
    assert second.lr == 0.02
    second.lr = 0.01
    for g in grads[3:]:
        second.step(g)
    for k in straight:
        np.testing.assert_array_equal(copy[k], straight[k])


def test_state_dict_is_json_able():
    import json

    _, meta = make_optimizer("adam", make_params(), lr=0.01).state_dict()
    assert json.loads(json.dumps(meta)) == meta


def test_load_state_dict_rejects_other_optimizer():
    arrays, meta = make_optimizer("adam", make_params(), lr=0.01).state_dict()
    with pytest.raises(CheckpointError, match="adam"):
        make_optimizer("adagrad", make_params(), lr=0.01).load_state_dict(arrays, meta)


def test_load_state_dict_rejects_other_shapes():
    arrays, meta = make_optimizer("adagrad", make_params(), lr=0.01).state_dict()
    arrays["sum.decoder.bias"] = np.zeros(V + 1)
    with pytest.raises(CheckpointError, match="decoder.bias"):
        make_optimizer("adagrad", make_params(), lr=0.01).load_state_dict(arrays, meta)


def test_unknown_optimizer_lists_choices():
    with pytest.raises(ValueError, match="sgd, momentum, adagrad, adam"):
        make_optimizer("rmsprop", make_params(), lr=0.1)


def test_loss_halving_schedule():
    opt = SGD(make_params(), lr=0.4)
    schedule = LossHalvingSchedule(opt)
    cuts = [schedule.update(x) for x in (5.0, 4.0, 4.5, 4.6, 3.0, 3.0)]
    assert cuts == [False, False, True, True, False, False]
    assert opt.lr == pytest.approx(0.1)
    restored = LossHalvingSchedule(opt)
    restored.load_state_dict(schedule.state_dict())
    assert restored.update(3.5) is True
    assert opt.lr == pytest.approx(0.05)
