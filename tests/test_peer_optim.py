"""Cross-checks of rnnlab.optim against torch.optim (float64).

Run with ``pytest -m peer`` after installing the ``peer`` extra (torch==2.13.0).
Every optimiser in ``OPTIMIZERS`` takes the same 5 random gradients as its
torch counterpart on the same parameters, and the parameters stay equal to
1e-12 relative; clipping equals ``clip_grad_norm_``; the plateau schedule cuts
the rate exactly when ``ReduceLROnPlateau(patience=0, threshold=0)`` does.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnlab.model import ModelConfig  # noqa: E402
from rnnlab.optim import OPTIMIZERS, SGD, PlateauSchedule, clip_grad_norm, make_optimizer, make_schedule  # noqa: E402

pytestmark = pytest.mark.peer
REL = 1e-12
STEPS = 5
SHAPES = ModelConfig(7, 5, embed_size=5).param_shapes()  # a word_language_model layout

# (our name, torch's class, hyperparameters given to both). Only lr given: both sides' defaults, which must agree.
CASES = [
    ("sgd", torch.optim.SGD, {"lr": 0.1}),
    ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("momentum", torch.optim.SGD, {"lr": 0.05}),  # torch is told momentum=0.9
    ("adagrad", torch.optim.Adagrad, {"lr": 0.1}),
    ("adagrad", torch.optim.Adagrad, {"lr": 0.1, "eps": 1e-6}),
    ("adam", torch.optim.Adam, {"lr": 0.01}),
    ("adam", torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "eps": 1e-6}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.5}),
]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def grad_sequence(n, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(n)]


def rel_diff(ours, theirs):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.float64
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def test_every_optimizer_is_checked():
    assert {name for name, _, _ in CASES} == set(OPTIMIZERS)


@pytest.mark.parametrize("name,torch_class,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_optim(name, torch_class, kw):
    params = make_params()
    tparams = {k: torch.tensor(p.copy(), requires_grad=True) for k, p in params.items()}
    ours = make_optimizer(name, params, **kw)
    theirs = torch_class(list(tparams.values()), **({"momentum": 0.9, **kw} if name == "momentum" else kw))
    start = {k: p.copy() for k, p in params.items()}
    for step, grads in enumerate(grad_sequence(STEPS), 1):
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
        ours.step(grads)
        for k in params:
            err = rel_diff(params[k], tparams[k])
            assert err < REL, f"step {step}, {k}: relative difference {err:.2e}"
    assert all(np.abs(params[k] - start[k]).max() > 1e-4 for k in params)  # the steps moved every parameter


def test_clip_matches_torch():
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


# validation losses with falls, ties with the best, rises, a fall below the previous loss that is not below
# the best, and a NaN. At most 7 cuts from lr 1: torch skips a cut smaller than its eps 1e-8, we never do.
LOSSES = [5.0, 4.0, 4.0, 4.5, 4.2, 3.9, 3.9, 3.95, float("nan"), 3.0, 3.0, 3.0 - 1e-12, 2.5, 2.6, 2.4]


@pytest.mark.parametrize("factor", [0.25, 0.5, 0.1])
def test_plateau_matches_reduce_lr_on_plateau(factor):
    opt = SGD({"w": np.zeros(1)}, lr=1.0)
    ours = make_schedule("plateau", opt) if factor == 0.25 else make_schedule("plateau", opt, factor=factor)
    assert isinstance(ours, PlateauSchedule) and ours.factor == factor
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, mode="min", factor=factor, patience=0, threshold=0)
    our_lrs, their_lrs, cuts = [], [], []
    for loss in LOSSES:
        before = topt.param_groups[0]["lr"]
        theirs.step(loss)
        cuts.append(ours.update(123.0, loss))
        their_lrs.append(topt.param_groups[0]["lr"])
        our_lrs.append(opt.lr)
        assert cuts[-1] == (their_lrs[-1] < before), loss
    assert our_lrs == their_lrs
    assert 3 <= sum(cuts) < len(cuts) - 3
