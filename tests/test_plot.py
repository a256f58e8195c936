"""rnnlab.plot: valid PNG files; several runs on one plot; markers where the learning rate changes and
where a run was resumed; the gradient-by-lag plot."""
import math
import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from rnnlab import LanguageModel  # noqa: E402
from rnnlab.diagnose import diagnose  # noqa: E402
from rnnlab.plot import (elapsed_seconds, gradient_lags_figure, losses_figure, lr_changes,  # noqa: E402
                         plot_gradient_lags, plot_losses, plot_runs, resumes, runs_figure)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) of a PNG file, after checking its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def evaluation(epoch, step, train, valid, lr, tokens=None, wall=None, tokens_per_s=None):
    row = {"epoch": epoch, "step": step, "tokens": tokens if tokens is not None else step * 100,
           "train_loss": train, "valid_loss": valid, "perplexity": None if valid is None else math.exp(valid),
           "lr": lr, "tokens_per_s": tokens_per_s}
    if wall is not None:
        row["wall_time"] = wall
    return row


def run_rows(scale=1.0, lr_halved_after=None):
    """Five evaluations; the learning rate halves after the evaluation at index ``lr_halved_after``."""
    rows = []
    lr = 0.1
    for i in range(5):
        rows.append(evaluation(i, i * 10, scale * (4 - 0.5 * i), scale * (4.2 - 0.4 * i), lr, wall=1000.0 + 60 * i))
        if lr_halved_after == i:
            lr /= 2
    return rows


def lines_with(fig, gid):
    return [line for line in fig.axes[0].get_lines() if line.get_gid() == gid]


# -- plot_losses ------------------------------------------------------------------------------


def test_plot_losses_writes_a_png(tmp_path):
    path = plot_losses(run_rows(), tmp_path / "loss.png", title="a run")
    assert path == tmp_path / "loss.png"
    assert png_size(path) == (640, 400)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves no temporary file


def test_rows_without_changes_or_resumes_draw_no_markers():
    fig = losses_figure(run_rows())
    assert lines_with(fig, "lr-change") == [] and lines_with(fig, "resume") == []
    assert len(fig.axes[0].get_lines()) == 2  # train and validation, as before markers existed


def test_learning_rate_changes_are_marked_where_the_new_rate_took_over():
    rows = run_rows(lr_halved_after=1)
    rows[3]["lr"] = rows[4]["lr"] = 0.01  # and again after the evaluation at epoch 2
    assert lr_changes(rows) == [(1, 0.05), (2, 0.01)]
    fig = losses_figure(rows)
    marks = lines_with(fig, "lr-change")
    assert [line.get_xdata()[0] for line in marks] == [1, 2]
    assert [text.get_text() for text in fig.axes[0].texts] == ["lr 0.05", "lr 0.01"]
    assert losses_figure(rows, markers=False).axes[0].get_lines()[-1].get_gid() is None
    assert len(losses_figure(rows, markers=False).axes[0].get_lines()) == 2


def test_resumes_are_marked_and_event_rows_are_not_evaluations():
    rows = run_rows()
    rows.insert(3, {"event": "resume", "epoch": 2, "step": 20, "tokens": 2000, "wall_time": 5000.0})
    rows.append({"event": "test", "step": 40, "model": "best", "test_loss": 2.0, "test_perplexity": 7.4,
                 "wall_time": 5200.0})
    assert resumes(rows) == [2]
    fig = losses_figure(rows)
    assert [line.get_xdata()[0] for line in lines_with(fig, "resume")] == [2]
    train = fig.axes[0].get_lines()[0]
    assert list(train.get_xdata()) == [0, 1, 2, 3, 4]  # the event rows add no point


# -- plot_runs ---------------------------------------------------------------------------------


def test_several_runs_on_one_plot(tmp_path):
    runs = [("rnn", run_rows(1.0)), ("lstm", run_rows(0.8)), ("gru", run_rows(0.9))]
    fig = runs_figure(runs, y="loss", x="tokens")
    valid, train = lines_with(fig, "valid"), lines_with(fig, "train")
    assert len(valid) == 3 and len(train) == 3
    assert [line.get_label() for line in valid] == ["rnn", "lstm", "gru"]
    assert all(line.get_linestyle() == "--" for line in train) and all(line.get_linestyle() == "-" for line in valid)
    assert [line.get_color() for line in valid] == [line.get_color() for line in train]
    assert len({line.get_color() for line in valid}) == 3  # one color per run
    assert list(valid[1].get_xdata()) == [0, 1000, 2000, 3000, 4000]
    np.testing.assert_allclose(valid[1].get_ydata(), [0.8 * (4.2 - 0.4 * i) for i in range(5)])
    path = plot_runs(runs, tmp_path / "runs.png", y="perplexity", x="step")
    assert png_size(path) == (720, 450)


def test_run_labels_and_perplexity():
    rows = run_rows()
    rows[2]["valid_loss"] = rows[2]["perplexity"] = None  # no validation at that evaluation
    fig = runs_figure([rows, run_rows(0.5)], y="perplexity", x="step", labels=["first", "second"])
    valid = lines_with(fig, "valid")
    assert [line.get_label() for line in valid] == ["first", "second"]
    assert list(valid[0].get_xdata()) == [0, 10, 30, 40]
    np.testing.assert_allclose(lines_with(fig, "train")[0].get_ydata(), [math.exp(4 - 0.5 * i) for i in range(5)])
    assert fig.axes[0].get_yscale() == "log"
    unnamed = runs_figure([rows], x="epoch")
    assert lines_with(unnamed, "valid")[0].get_label() == "run 1"
    with pytest.raises(ValueError, match="labels"):
        runs_figure([rows], labels=["a", "b"])
    with pytest.raises(ValueError, match="x must be"):
        runs_figure([rows], x="hours")


def test_time_axis_leaves_out_the_pause_before_a_resume():
    rows = run_rows()[:3]  # evaluations at walls 1000, 1060, 1120
    rows.append({"event": "resume", "epoch": 2, "step": 20, "tokens": 2000, "wall_time": 9000.0})
    rows.append(evaluation(3, 30, 2.5, 2.9, 0.1, wall=9030.0))
    assert elapsed_seconds(rows) == [0.0, 60.0, 120.0, 150.0]
    fig = runs_figure([("run", rows)], x="time")
    assert list(lines_with(fig, "valid")[0].get_xdata()) == [0.0, 60.0, 120.0, 150.0]
    older = [evaluation(0, 0, 4.0, 4.1, 0.1, tokens=0),  # rows from before wall_time: tokens at tokens_per_s
             evaluation(1, 10, 3.0, 3.1, 0.1, tokens=1000, tokens_per_s=50.0),
             evaluation(2, 20, 2.0, 2.1, 0.1, tokens=3000, tokens_per_s=100.0)]
    assert elapsed_seconds(older) == [0.0, 20.0, 40.0]
    older[2]["tokens_per_s"] = None
    assert elapsed_seconds(older) == [0.0, 20.0, None]


# -- plot_gradient_lags --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diagnoses():
    ids = np.random.default_rng(0).integers(0, 11, size=(40, 3))
    rnn = diagnose(LanguageModel(11, 8, embed_size=4, cell="rnn", seed=0), ids, max_lag=20, label="rnn")
    lstm = diagnose(LanguageModel(11, 8, embed_size=4, cell="lstm", num_layers=2, seed=0), ids, max_lag=20)
    return rnn, lstm


def test_gradient_lags_one_line_per_model_and_dashed_memory_cell(tmp_path, diagnoses):
    rnn, lstm = diagnoses
    fig = gradient_lags_figure([rnn, lstm.to_dict()])
    h, c = lines_with(fig, "h"), lines_with(fig, "c")
    assert len(h) == 2 and len(c) == 1
    assert h[0].get_label() == f"rnn (memory {rnn.effective_memory})"
    assert h[1].get_label().startswith("lstm 2 x 8")  # no label: cell and size; the top layer is drawn
    np.testing.assert_allclose(h[1].get_ydata(), lstm.curve(1, "h").ratio)
    assert c[0].get_linestyle() == "--" and c[0].get_color() == h[1].get_color()
    assert fig.axes[0].get_yscale() == "log"
    (threshold,) = lines_with(fig, "threshold")
    assert list(threshold.get_ydata()) == [1e-3, 1e-3]
    path = plot_gradient_lags([rnn, lstm], tmp_path / "lags.png", title="memory")
    assert png_size(path) == (640, 400)


def test_zero_ratios_are_left_out_of_the_log_scale():
    model = LanguageModel(7, 4, embed_size=3, cell="rnn", seed=0)
    model.params["rnn.weight_hh_l0"][:] = 0.0
    result = diagnose(model, np.random.default_rng(0).integers(0, 7, size=(12, 2)), max_lag=5)
    (line,) = lines_with(gradient_lags_figure([result]), "h")
    ydata = np.asarray(line.get_ydata(), dtype=float)
    assert ydata[0] == 1.0 and np.isnan(ydata[1:]).all()


def test_without_matplotlib_nothing_is_written(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert plot_losses(run_rows(), tmp_path / "loss.png") is None
    assert plot_runs([("a", run_rows())], tmp_path / "runs.png") is None
    assert not list(tmp_path.iterdir())
