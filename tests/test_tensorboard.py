"""rnnlab.tensorboard: event logs read back with TensorBoard's own reader; the writer imported only when used."""
import subprocess
import sys

import numpy as np
import pytest

from rnnlab.errors import RnnlabError

pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="TensorBoard's reader (the tensorboard package) is not installed")

from rnnlab.tensorboard import EventLog  # noqa: E402


def read_log(logdir):
    """TensorBoard's own reader over every event file in logdir, nothing sampled away."""
    reader = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    reader.Reload()
    return reader


def test_scalars_read_back_by_tag_step_and_value(tmp_path):
    with EventLog(tmp_path / "run") as log:
        for step, loss in [(0, 4.17), (100, 3.25), (200, 2.5)]:
            log.scalar("loss/train", loss, step, wall_time=1000.0 + step)
        log.scalar("lr", np.float32(0.003), 0)
        log.scalars({"loss/valid": 2.75, "perplexity": np.float64(15.6), "tokens_per_s": None, "epoch": 1,
                     "note": "text", "resumed": True}, step=200)
    reader = read_log(tmp_path / "run")
    assert sorted(reader.Tags()["scalars"]) == ["epoch", "loss/train", "loss/valid", "lr", "perplexity"]
    train = reader.Scalars("loss/train")
    assert [e.step for e in train] == [0, 100, 200]
    assert [e.value for e in train] == [pytest.approx(v, rel=1e-6) for v in (4.17, 3.25, 2.5)]
    assert [e.wall_time for e in train] == [1000.0, 1100.0, 1200.0]
    assert reader.Scalars("lr")[0].value == pytest.approx(0.003, rel=1e-6)
    assert [(e.step, e.value) for e in reader.Scalars("loss/valid")] == [(200, 2.75)]
    assert reader.Scalars("perplexity")[0].value == pytest.approx(15.6, rel=1e-6)


def test_histograms_read_back_with_their_statistics(tmp_path):
    gen = np.random.default_rng(0)
    weights = gen.normal(0, 0.1, (40, 30)).astype(np.float32)
    with EventLog(tmp_path) as log:
        log.histogram("weights/rnn.weight_hh_l0", weights, step=5)
        log.histogram("weights/rnn.weight_hh_l0", weights * 2, step=10)
        log.histogram("grads/with_nan", np.array([1.0, np.nan, 3.0, np.inf]), step=5)
    reader = read_log(tmp_path)
    assert sorted(reader.Tags()["histograms"]) == ["grads/with_nan", "weights/rnn.weight_hh_l0"]
    events = reader.Histograms("weights/rnn.weight_hh_l0")
    assert [e.step for e in events] == [5, 10]
    for event, values in zip(events, (weights, weights * 2)):
        h = event.histogram_value
        values = values.astype(np.float64)
        assert h.num == values.size and sum(h.bucket) == values.size
        assert h.min == pytest.approx(values.min()) and h.max == pytest.approx(values.max())
        assert h.sum == pytest.approx(values.sum(), abs=1e-9)
        assert h.sum_squares == pytest.approx((values ** 2).sum())
    finite = reader.Histograms("grads/with_nan")[0].histogram_value
    assert (finite.num, finite.min, finite.max) == (2, 1.0, 3.0)


def test_histogram_of_nothing_finite_is_refused(tmp_path):
    with EventLog(tmp_path) as log:
        with pytest.raises(ValueError, match="no finite values"):
            log.histogram("empty", np.array([np.nan]), step=0)


def test_flush_makes_events_readable_before_close(tmp_path):
    log = EventLog(tmp_path, flush_secs=3600)
    try:
        log.scalar("loss", 1.0, 1)
        log.flush()
        assert [e.value for e in read_log(tmp_path).Scalars("loss")] == [1.0]
    finally:
        log.close()


def test_a_second_log_in_the_same_folder_adds_a_file(tmp_path):
    """As a resumed run does: both files are read, in order."""
    with EventLog(tmp_path) as log:
        for step in range(3):
            log.scalar("loss", 3.0 - step, step)
    with EventLog(tmp_path) as log:
        for step in range(3, 5):
            log.scalar("loss", 3.0 - step, step)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert [(e.step, e.value) for e in read_log(tmp_path).Scalars("loss")] == [
        (0, 3.0), (1, 2.0), (2, 1.0), (3, 0.0), (4, -1.0)]


def test_closed_log_refuses_events_and_closes_once(tmp_path):
    log = EventLog(tmp_path)
    log.close()
    log.close()
    log.flush()
    with pytest.raises(ValueError, match="closed"):
        log.scalar("loss", 1.0, 0)


def run_python(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_writer_library_is_imported_only_when_a_log_is_made(tmp_path):
    out = run_python(
        "import sys\n"
        "import rnnlab, rnnlab.train, rnnlab.tensorboard\n"
        "print('tensorboardX' in sys.modules)\n"
        f"log = rnnlab.tensorboard.EventLog({str(tmp_path)!r})\n"
        "log.scalar('x', 1.0, 0)\n"
        "log.close()\n"
        "print('tensorboardX' in sys.modules, 'torch' in sys.modules)\n")
    assert out == ["False", "True", "False"]  # and PyTorch stays out, installed or not


def test_a_missing_writer_library_names_the_extra(tmp_path, monkeypatch):
    import rnnlab.tensorboard as tensorboard

    for name in [m for m in sys.modules if m == "tensorboardX" or m.startswith("tensorboardX.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    with pytest.raises(RnnlabError, match=r"pip install 'rnnlab\[tensorboard\]'"):
        tensorboard.EventLog(tmp_path)
    assert "torch" not in sys.modules or sys.modules["torch"] is not None  # nothing left blocked
