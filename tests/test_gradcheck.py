"""The finite-difference checker: it passes on the engine, names what it checked, and can fail."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnlab
from rnnlab import gates, output
from rnnlab.cells import RNNSequence
from rnnlab.gradcheck import check_function, model_cases, numeric_grad, run_all

SRC = Path(rnnlab.__file__).resolve().parent.parent
MODES = ("full", "chunk", "window", "masked")


def run(**kw):
    lines = []
    ok = run_all(emit=lines.append, **kw)
    return ok, "\n".join(lines)


@pytest.fixture(scope="module")
def clean_run():
    return run()


def test_run_all_passes(clean_run):
    ok, text = clean_run
    assert ok is True, text
    assert "FAIL" not in text
    assert text.splitlines()[-1] == "all gradients agree with finite differences"


def test_run_all_names_every_gate_parameter_and_mode(clean_run):
    _, text = clean_run
    gate_lines = [ln for ln in text.splitlines() if ln.startswith("gate ")]
    for cls in gates.PRIMITIVES:
        assert any(ln.startswith(f"gate {cls.__name__} ") for ln in gate_lines), cls.__name__
    for composite in ("RNNStep", "LinearSoftmaxCE", "RNNSequence[full]", "RNNSequence[window]"):
        assert f"gate {composite} " in text, composite
    model_lines = [ln for ln in text.splitlines() if ln.startswith("model ")]
    names = set()
    for case in model_cases():
        names |= set(case.model.params)
    for name in names:
        assert any(f" {name} " in ln for ln in model_lines), name
    for mode in MODES:
        assert any(mode in ln for ln in model_lines), mode
    # every parameter of every case is checked in every mode of that case
    for case in model_cases():
        mode = case.bptt + (f"/{case.truncate}" if case.truncate else "") + (" masked" if case.masked else "")
        for name in case.model.params:
            assert any(ln.startswith(f"model {mode} {name} ") for ln in model_lines), (mode, name)
    # every line reports a finite error and a verdict
    for ln in gate_lines + model_lines:
        err, verdict = ln.split()[-2:]
        assert np.isfinite(float(err)) and verdict == "ok"


# ---------------------------------------------------------------- planted bugs


def failing_lines(text):
    return [ln for ln in text.splitlines() if ln.endswith("FAIL")]


def test_planted_bug_in_tanh_backward_is_caught(monkeypatch):
    monkeypatch.setattr(gates.Tanh, "backward", lambda self, y, dy: ((1.0 - y) * dy,))
    ok, text = run(cells=("rnn",))  # the planted bug is in the tanh RNN's path
    assert ok is False
    bad = failing_lines(text)
    assert bad and all(ln.startswith("gate Tanh") for ln in bad), bad
    assert text.splitlines()[-1] == "SOME GRADIENTS DISAGREE"


def with_truncate(method, change):
    """An RNNSequence backward method that runs with ``truncate`` changed by ``change``."""
    def planted(self, *args):
        saved = self.truncate
        self.truncate = change(saved)
        try:
            return method(self, *args)
        finally:
            self.truncate = saved
    return planted


def test_planted_off_by_one_window_is_caught(monkeypatch):
    """The window reaches one step too far back: only the model's window checks can see it."""
    monkeypatch.setattr(RNNSequence, "_window", with_truncate(
        RNNSequence._window, lambda k: None if k is None else k + 1))
    ok, text = run(cells=("rnn",))  # the planted bug is in the tanh RNN's path
    assert ok is False
    bad = failing_lines(text)
    assert bad and all(ln.startswith("model window") for ln in bad), bad
    assert any("rnn.weight_hh_l0" in ln for ln in bad)


def test_planted_chunk_that_does_not_cut_is_caught(monkeypatch):
    monkeypatch.setattr(RNNSequence, "_through_time", with_truncate(RNNSequence._through_time, lambda k: None))
    ok, text = run(cells=("rnn",))  # the planted bug is in the tanh RNN's path
    assert ok is False
    bad = failing_lines(text)
    assert bad and all(ln.startswith("model chunk") for ln in bad), bad


def test_planted_embedding_that_overwrites_repeats_is_caught(monkeypatch):
    def last_write_wins(ids, rows, num_rows):
        out = np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype)
        out[ids] = rows  # repeated ids keep one row instead of the sum
        return out

    monkeypatch.setattr(gates, "scatter_rows", last_write_wins)
    ok, text = run(cells=("rnn",))  # the planted bug is in the tanh RNN's path
    assert ok is False
    assert any(ln.startswith("gate Embedding") for ln in failing_lines(text))
    assert any("encoder.weight" in ln for ln in failing_lines(text))


def test_planted_decoder_bias_bug_is_caught(monkeypatch):
    original = output.LinearSoftmaxCE.backward

    def half_bias(self, saved, dloss):
        dh, dw, db, *rest = original(self, saved, dloss)
        return (dh, dw, None if db is None else db * 0.5, *rest)

    monkeypatch.setattr(output.LinearSoftmaxCE, "backward", half_bias)
    ok, text = run(cells=("rnn",))  # the planted bug is in the tanh RNN's path
    assert ok is False
    bad = failing_lines(text)
    assert any("LinearSoftmaxCE d/dbias" in ln for ln in bad)
    assert any("decoder.bias" in ln for ln in bad)


# ---------------------------------------------------------------- the checker itself


def test_numeric_grad_is_centred_and_restores_the_array():
    x = np.array([0.3, -1.2, 2.0])
    before = x.copy()
    idx, g = numeric_grad(lambda: float(np.sum(x ** 3)), x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(g, 3 * before ** 2, rtol=1e-9)
    assert list(idx) == [0, 1, 2]
    idx, g = numeric_grad(lambda: float(np.sum(x ** 2)), x, max_entries=2)
    assert len(idx) == 2 and len(set(idx)) == 2
    np.testing.assert_allclose(g, 2 * before[idx], rtol=1e-9)


def test_check_function_reports_per_array():
    a, b = np.array([1.0, 2.0]), np.array([[0.5]])
    errs = check_function(lambda: float(np.sum(a ** 2) + 3 * b.sum()), {"a": a, "b": b},
                          {"a": 2 * a, "b": np.array([[3.1]])})
    assert errs["a"] < 1e-9
    assert errs["b"] == pytest.approx(0.1 / 3.1, rel=1e-6)


# ---------------------------------------------------------------- the command line


def _python_m_rnnlab(*args, code=None):
    if not (SRC / "rnnlab" / "__main__.py").exists():
        pytest.skip("src/rnnlab/__main__.py does not exist yet: `python -m rnnlab` is not available")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "rnnlab", *args] if code is None else [sys.executable, "-c", code]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_cli_gradcheck_exits_zero():
    proc = _python_m_rnnlab("gradcheck")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for mode in MODES:
        assert mode in proc.stdout, mode
    for name in ("encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l1", "rnn.bias_hh_l0",
                 "decoder.weight", "decoder.bias"):
        assert name in proc.stdout, name
    for cls in gates.PRIMITIVES:
        assert f"gate {cls.__name__} " in proc.stdout, cls.__name__


def test_cli_gradcheck_exits_nonzero_on_a_planted_bug():
    """`rnnlab gradcheck` exits 0 *only* when all pass: with a wrong Tanh backward it does not."""
    code = ("import runpy, sys, rnnlab.gates as g\n"
            "g.Tanh.backward = lambda self, y, dy: (dy,)\n"
            "sys.argv = ['rnnlab', 'gradcheck']\n"
            "runpy.run_module('rnnlab', run_name='__main__')\n")
    proc = _python_m_rnnlab(code=code)
    assert proc.returncode not in (0, None), proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout
