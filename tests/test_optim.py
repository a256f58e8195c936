import json

import numpy as np
import pytest

from rnnlab.model import ModelConfig
from rnnlab.errors import CheckpointError
from rnnlab.optim import (OPTIMIZERS, SCHEDULES, SGD, Adagrad, Adam, AdamW, ConstantSchedule, LossHalvingSchedule,
                          PlateauSchedule, RMSprop, clip_grad_norm, make_optimizer, make_schedule)

V, H = 7, 5
SHAPES = ModelConfig(V, H, embed_size=H).param_shapes()  # a word_language_model layout
# Non-default hyperparameters: a resumed optimiser made with the defaults must take them from the state.
HYPER = {"sgd": {"weight_decay": 0.01}, "momentum": {"momentum": 0.5}, "adagrad": {"eps": 1e-6},
         "adam": {"betas": (0.8, 0.99)}, "rmsprop": {"alpha": 0.9, "eps": 1e-6}, "adamw": {"weight_decay": 0.1}}


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def grad_sequence(n, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(n)]


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


def test_rmsprop_by_hand():
    params = make_params()
    start = {k: p.copy() for k, p in params.items()}
    g1, g2 = grad_sequence(2)
    opt = RMSprop(params, lr=0.01)
    assert (opt.alpha, opt.eps) == (0.99, 1e-8)  # torch's defaults
    opt.step(g1)
    opt.step(g2)
    for k in params:
        v1 = 0.01 * g1[k] ** 2
        p1 = start[k] - 0.01 * g1[k] / (np.sqrt(v1) + 1e-8)
        v2 = 0.99 * v1 + 0.01 * g2[k] ** 2
        np.testing.assert_allclose(params[k], p1 - 0.01 * g2[k] / (np.sqrt(v2) + 1e-8), rtol=1e-14)


def test_adamw_is_adam_after_decoupled_decay():
    """Each AdamW step is ``p *= 1 - lr*wd`` and then Adam's step on the decayed parameter, bit for bit."""
    decoupled, by_hand = make_params(), make_params()
    adamw = AdamW(decoupled, lr=0.01, weight_decay=0.5)
    adam = Adam(by_hand, lr=0.01)
    for grads in grad_sequence(4):
        adamw.step(grads)
        for p in by_hand.values():
            p *= 1 - 0.01 * 0.5
        adam.step(grads)
        for k in by_hand:
            np.testing.assert_array_equal(decoupled[k], by_hand[k])


def test_adamw_defaults_and_no_decay_is_adam():
    assert AdamW(make_params(), lr=0.01).weight_decay == 0.01  # torch's default
    params, adam_params = make_params(), make_params()
    adamw, adam = AdamW(params, lr=0.01, weight_decay=0.0), Adam(adam_params, lr=0.01)
    for grads in grad_sequence(3):
        adamw.step(grads)
        adam.step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], adam_params[k])


def test_float32_stays_float32():
    params = make_params(dtype=np.float32)
    for name in OPTIMIZERS:
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


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_roundtrip_continues_identically(name):
    grads = grad_sequence(6)
    straight = make_params()
    opt = make_optimizer(name, straight, lr=0.01, **HYPER[name])
    for g in grads:
        opt.step(g)

    resumed = make_params()
    first = make_optimizer(name, resumed, lr=0.01, **HYPER[name])
    for g in grads[:3]:
        first.step(g)
    first.lr = 0.02  # a halving trainer changes lr; the state carries it
    arrays, meta = first.state_dict()
    copy = {k: p.copy() for k, p in resumed.items()}
    second = make_optimizer(name, copy, lr=123.0)  # default hyperparameters: the state brings HYPER[name]
    second.load_state_dict(arrays, json.loads(json.dumps(meta)))  # meta as a checkpoint reads it back
    assert second.lr == 0.02
    second.lr = 0.01
    for g in grads[3:]:
        second.step(g)
    for k in straight:
        np.testing.assert_array_equal(copy[k], straight[k])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_is_json_able(name):
    _, meta = make_optimizer(name, make_params(), lr=0.01).state_dict()
    assert json.loads(json.dumps(meta)) == meta


@pytest.mark.parametrize("saved,loader", [("adam", "adagrad"), ("adam", "adamw"), ("adamw", "adam"),
                                          ("rmsprop", "adagrad")])
def test_load_state_dict_rejects_other_optimizer(saved, loader):
    arrays, meta = make_optimizer(saved, make_params(), lr=0.01).state_dict()
    with pytest.raises(CheckpointError, match=f"for '{saved}', not '{loader}'"):
        make_optimizer(loader, make_params(), lr=0.01).load_state_dict(arrays, meta)


def test_load_state_dict_rejects_other_shapes():
    arrays, meta = make_optimizer("adagrad", make_params(), lr=0.01).state_dict()
    arrays["sum.decoder.bias"] = np.zeros(V + 1)
    with pytest.raises(CheckpointError, match="decoder.bias"):
        make_optimizer("adagrad", make_params(), lr=0.01).load_state_dict(arrays, meta)


def test_unknown_optimizer_lists_choices():
    with pytest.raises(ValueError, match="sgd, momentum, adagrad, adam, rmsprop, adamw"):
        make_optimizer("lion", make_params(), lr=0.1)


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


def test_loss_halving_schedule_ignores_the_validation_loss():
    opt = SGD(make_params(), lr=0.4)
    schedule = LossHalvingSchedule(opt)
    cuts = [schedule.update(train, valid) for train, valid in ((5.0, 1.0), (4.0, 9.0), (4.5, 0.5))]
    assert cuts == [False, False, True]
    assert opt.lr == pytest.approx(0.2)


def test_loss_halving_loads_an_old_unnamed_state():
    """Checkpoints from before schedules had names hold ``{"factor", "previous"}``."""
    opt = SGD(make_params(), lr=0.4)
    schedule = LossHalvingSchedule(opt)
    schedule.load_state_dict({"factor": 0.5, "previous": 4.0})
    assert schedule.state_dict() == {"name": "halve-on-rise", "factor": 0.5, "previous": 4.0}
    assert schedule.update(4.5) is True
    assert opt.lr == pytest.approx(0.2)
    LossHalvingSchedule(opt).load_state_dict({"factor": 0.5, "previous": None})


# valid losses, whether each evaluation cuts: the first never does; a tie with the best cuts; so does
# a loss below the previous one but not below the best (4.2 after 4.5, best 4.0)
PLATEAU = [(5.0, False), (4.0, False), (4.0, True), (4.5, True), (4.2, True), (3.9, False), (3.9, True),
           (3.95, True), (1.0, False), (1.0 - 1e-12, False)]


def test_plateau_cuts_exactly_when_not_below_the_best():
    opt = SGD(make_params(), lr=1.0)
    schedule = PlateauSchedule(opt)
    assert schedule.factor == 0.25  # word_language_model's lr /= 4
    lrs = []
    for loss, expected in PLATEAU:
        assert schedule.update(99.0, loss) is expected, loss  # the training loss plays no part
        lrs.append(opt.lr)
    assert lrs == [1.0, 1.0, 0.25, 0.25**2, 0.25**3, 0.25**3, 0.25**4, 0.25**5, 0.25**5, 0.25**5]
    assert schedule.best == 1.0 - 1e-12


def test_plateau_falls_back_to_the_training_loss():
    opt = SGD(make_params(), lr=1.0)
    schedule = PlateauSchedule(opt, factor=0.5)
    assert [schedule.update(loss) for loss, _ in PLATEAU] == [cut for _, cut in PLATEAU]
    assert [schedule.update(loss, None) for loss in (0.5, 0.5)] == [False, True]
    assert opt.lr == 0.5**6


def test_plateau_nan_cuts_and_is_never_the_best():
    opt = SGD(make_params(), lr=1.0)
    schedule = PlateauSchedule(opt)
    assert [schedule.update(0.0, x) for x in (float("nan"), 3.0, float("nan"), 2.0)] == [True, False, True, False]
    assert schedule.best == 2.0 and opt.lr == 0.25**2


def test_plateau_factor_must_be_a_cut():
    for factor in (0.0, 1.5, -0.25):
        with pytest.raises(ValueError, match="factor"):
            PlateauSchedule(SGD(make_params(), lr=1.0), factor=factor)


def test_constant_schedule_never_cuts():
    opt = SGD(make_params(), lr=0.3)
    schedule = make_schedule("none", opt)
    assert isinstance(schedule, ConstantSchedule)
    losses = [(5.0, 5.0), (6.0, 7.0), (6.0, 7.0), (float("nan"), None), (1e9, 1e9)]
    assert not any(schedule.update(train, valid) for train, valid in losses)
    assert opt.lr == 0.3
    assert schedule.state_dict() == {"name": "none"}


def test_registry_names():
    assert list(SCHEDULES) == ["halve-on-rise", "plateau", "none"]
    for name, cls in SCHEDULES.items():
        schedule = make_schedule(name, SGD(make_params(), lr=0.1))
        assert type(schedule) is cls and schedule.name == name
        assert schedule.state_dict()["name"] == name
    assert make_schedule("plateau", SGD(make_params(), lr=0.1), factor=0.5).factor == 0.5
    assert make_schedule("halve-on-rise", SGD(make_params(), lr=0.1), factor=0.3).factor == 0.3
    with pytest.raises(ValueError, match="halve-on-rise, plateau, none"):
        make_schedule("cosine", SGD(make_params(), lr=0.1))


# (train, valid) pairs with rises, ties and falls in both
LOSSES = [(5.0, 5.5), (4.0, 4.5), (4.2, 4.5), (4.1, 4.7), (3.0, 4.6), (3.5, 4.0), (3.5, 4.0), (2.0, 4.2),
          (2.5, 3.0)]


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("split", [1, 4, 6])
def test_schedule_roundtrip_mid_training_continues_identically(name, split):
    """Stop after ``split`` evaluations, save (through JSON), load into a default schedule: same cuts after."""
    kw = {} if name == "none" else {"factor": 0.3}  # the default schedule must take the factor from the state
    opt = SGD(make_params(), lr=1.0)
    straight = make_schedule(name, opt, **kw)
    cuts = [straight.update(*losses) for losses in LOSSES]

    first_opt = SGD(make_params(), lr=1.0)
    first = make_schedule(name, first_opt, **kw)
    for losses in LOSSES[:split]:
        first.update(*losses)
    state = json.loads(json.dumps(first.state_dict()))
    second_opt = SGD(make_params(), lr=first_opt.lr)
    second = make_schedule(name, second_opt)
    second.load_state_dict(state)
    assert second.state_dict() == first.state_dict()
    assert [second.update(*losses) for losses in LOSSES[split:]] == cuts[split:]
    assert second_opt.lr == opt.lr
    if name != "none":
        assert any(cuts[split:]) and not all(cuts[split:])  # the rest of the run says something


@pytest.mark.parametrize("saved", list(SCHEDULES))
@pytest.mark.parametrize("loader", list(SCHEDULES))
def test_schedule_refuses_another_schedules_state(saved, loader):
    if saved == loader:
        return
    state = make_schedule(saved, SGD(make_params(), lr=0.1)).state_dict()
    schedule = make_schedule(loader, SGD(make_params(), lr=0.1))
    before = schedule.state_dict()
    with pytest.raises(CheckpointError, match=f"for '{saved}', not '{loader}'") as caught:
        schedule.load_state_dict(state)
    assert "\n" not in str(caught.value)
    assert schedule.state_dict() == before


@pytest.mark.parametrize("loader", ["plateau", "none"])
def test_an_old_unnamed_state_is_halve_on_rise_only(loader):
    with pytest.raises(CheckpointError, match=f"for 'halve-on-rise', not '{loader}'"):
        make_schedule(loader, SGD(make_params(), lr=0.1)).load_state_dict({"factor": 0.5, "previous": 4.0})


def test_schedule_state_that_is_no_object_is_refused():
    with pytest.raises(CheckpointError, match="schedule state is a list"):
        PlateauSchedule(SGD(make_params(), lr=0.1)).load_state_dict([0.25, 3.0])
