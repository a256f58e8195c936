"""``rnnlab bench`` at tiny sizes: it runs and reports every figure.

Nothing here is timed: the speed targets live in the benchmark itself, these
tests only check that each measurement runs and lands in the output.
"""
import json

import pytest

from rnnlab import bench

POSITIVE = {
    "train": ["rnnlab_tokens_per_s", "rnnlab_chunk_ms", "tutorial_tokens_per_s", "tutorial_step_ms", "vs_tutorial"],
    "roofline": ["tokens_per_s", "chunk_ms", "logits_ms", "decoder_grad_ms", "hidden_grad_ms", "fraction"],
    "classic": ["sgd_step_ms", "reference_ms", "speedup", "reference_in_process_ms", "speedup_in_process"],
    "eval": ["tokens_per_s", "chunk_ms", "vs_training"],
    "generate": ["tokens_per_s", "ms_per_token"],
}


@pytest.fixture(scope="module")
def tiny():
    """One tiny run without PyTorch, shared by the tests that only read it."""
    return bench.run(bench.TINY, "tiny", use_torch=False)


def test_every_figure_is_a_positive_number(tiny):
    for section, keys in POSITIVE.items():
        for key in keys:
            value = tiny[section][key]
            assert isinstance(value, float) and value > 0, (section, key, value)
    assert tiny["torch"] is None and tiny["train"]["torch_tokens_per_s"] is None


def test_the_literal_step_runs_in_a_child_with_the_allocator_untouched():
    """The tutorial's step is timed in its own process, RNNLAB_MALLOC_TUNE=0, as the tutorial runs."""
    seen = bench._run_child("import json, os, rnnlab.backend as b; "
                            "print(json.dumps([os.environ.get('RNNLAB_MALLOC_TUNE'), b.tune_allocator()]))",
                            [], {"RNNLAB_MALLOC_TUNE": "0"})
    assert seen == ["0", False]
    times = bench.literal_seconds(bench.TINY, "classic", 3, 1)
    assert len(times) == 3 and all(isinstance(t, float) and t > 0 for t in times)
    # the child's model is the one measured in this process: same seeded weights
    here = bench._literal_model(bench.TINY, "classic")
    assert here.U.shape == (bench.TINY.hidden, bench.TINY.vocab)
    assert (here.U == bench._literal_model(bench.TINY, "classic").U).all()


def test_memory_runs_report_peak_above_the_ids(tiny):
    memory = tiny["memory"]
    assert [run["tokens"] for run in memory["runs"]] == list(bench.TINY.memory_tokens)
    for run in memory["runs"]:
        assert run["ids_bytes"] == 4 * run["tokens"]  # int32 ids
        assert run["peak_rss_bytes"] > run["ids_bytes"]
        assert run["peak_minus_ids_bytes"] == run["peak_rss_bytes"] - run["ids_bytes"]


def _softmax_targets() -> int:
    """How many targets the output-layer section names (each with a value or n/a)."""
    from dataclasses import asdict

    from rnnlab import bench_softmax

    return len(bench_softmax.targets(None, asdict(bench_softmax.TINY)))


def test_targets_name_each_goal(tiny):
    names = [row["name"] for row in tiny["targets"]]
    assert len(names) == 8 + 2 * len(tiny["gated"]) + _softmax_targets()
    assert not any("issue" in name for name in names)  # targets speak of what they measure
    for row in tiny["targets"]:
        assert row["pass"] in (True, False, None)
    by_name = {row["name"]: row for row in tiny["targets"]}
    assert by_name["training vs PyTorch"]["pass"] is None  # not measured without PyTorch


def test_machine_reports_blas_and_openblas_settings(tiny):
    machine = tiny["machine"]
    assert {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"} <= set(machine["env"])
    assert machine["blas"]["library"] and machine["nproc"] >= 1


def test_table_shows_targets_and_settings(tiny):
    text = bench.render(tiny)
    assert "OPENBLAS_CORETYPE" in text and "BLAS" in text
    verdicts = text.count("PASS") + text.count("FAIL") + text.count("n/a")
    assert verdicts == 8 + 2 * len(tiny["gated"]) + _softmax_targets()


def test_main_json_with_threads(capsys):
    pytest.importorskip("threadpoolctl")
    assert bench.main(["--tiny", "--json", "--no-torch", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "tiny"
    assert result["machine"]["threads_requested"] == 1
    assert result["machine"]["blas"]["threads"] == 1


def test_torch_side_computes_the_same_loss(capsys):
    pytest.importorskip("torch")
    assert bench.main(["--tiny", "--json"]) == 0
    train = json.loads(capsys.readouterr().out)["train"]
    assert train["torch_tokens_per_s"] > 0 and train["vs_torch"] > 0
    first = train["first_chunk_loss"]
    assert first["torch"] == pytest.approx(first["rnnlab"], rel=1e-5)


def test_gated_cells_are_measured_side_by_side(tiny, capsys):
    """Every gated cell in the registry gets training, roofline and one-layer figures; with PyTorch
    both sides start from the same weights (the same first-chunk loss)."""
    from rnnlab import bench_cells
    from rnnlab.cells import CELLS

    assert set(tiny["gated"]) == {c for c in bench_cells.GATED if c in CELLS}
    for figures in tiny["gated"].values():
        for key in ("rnnlab_tokens_per_s", "roofline_tokens_per_s", "roofline_fraction", "rnnlab_layer_ms"):
            assert figures[key] > 0, key
        assert figures["vs_torch"] is None
    pytest.importorskip("torch")
    assert bench.main(["--tiny", "--json"]) == 0
    for cell, figures in json.loads(capsys.readouterr().out)["gated"].items():
        first = figures["first_chunk_loss"]
        assert first["torch"] == pytest.approx(first["rnnlab"], rel=1e-5), cell
        assert figures["vs_torch"] > 0 and figures["layer_vs_torch"] > 0


def test_output_layers_are_measured_side_by_side(tiny):
    """Full, class and adaptive layers: training and evaluation for each cell and vocabulary, the
    layer alone at each size; the targets name both cells and both cut layers."""
    from rnnlab import bench_softmax

    s, section = bench_softmax.TINY, tiny["softmax"]
    assert [(m["cell"], m["vocab"]) for m in section["models"]] == [(c, v) for v in s.vocabs for c in s.cells]
    for m in section["models"]:
        for key in ("train_tokens_per_s", "eval_tokens_per_s"):
            assert all(m[key][layer] > 0 for layer in bench_softmax.LAYERS), key
        assert m["train_speedup"]["class"] > 0 and m["eval_speedup"]["adaptive"] > 0
        assert m["ids"].startswith("Zipf") and m["adaptive_vs_torch"] is None
    assert [row["vocab"] for row in section["layer"]] == list(s.layer_vocabs)
    for row in section["layer"]:
        assert all(row["us_per_token"][layer] > 0 for layer in bench_softmax.LAYERS)
        assert row["torch_adaptive_us_per_token"] is None
    names = [row["name"] for row in bench.targets(tiny) if "softmax" in row["name"]]
    assert {name.split()[0] for name in names} == {"RNN", "LSTM"}
    text = bench.render(tiny)
    assert "output layers" in text and "Zipf" in text
    sweep = bench_softmax.measure_cutoffs(s, (s.vocabs[0],), lambda message: None)[0]  # rules that fit V only
    assert set(sweep["us_per_token"]) == {name for name, cuts in sweep["cutoffs"].items() if cuts}
    assert all(value > 0 for value in sweep["us_per_token"].values())


def test_output_layers_adaptive_step_matches_pytorch():
    """With PyTorch the adaptive model's first chunk gives the same loss on both sides, from the
    same weights, and so does the adaptive layer alone."""
    torch = pytest.importorskip("torch")
    from rnnlab import bench_softmax

    section = bench_softmax.measure(bench_softmax.TINY, torch, lambda message: None)
    for m in section["models"]:
        first = m["first_chunk_loss_adaptive"]
        assert first["torch"] == pytest.approx(first["rnnlab"], rel=1e-5), (m["cell"], m["vocab"])
        assert m["adaptive_vs_torch"] > 0
    for row in section["layer"]:
        assert row["loss_adaptive"]["torch"] == pytest.approx(row["loss_adaptive"]["rnnlab"], rel=1e-5)
        assert row["adaptive_vs_torch"] > 0


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--threads", "two"], ["--bogus"], ["extra"]])
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab bench: error:")


def test_profile_train_classic_reports_the_products_as_the_engine_makes_them():
    """benchmarks/profile_train.py --classic at a small vocabulary: the step's profile, then the
    three float64 products timed both ways, the blocked ones in the engine's block size."""
    import subprocess
    import sys
    from pathlib import Path

    from rnnlab import output

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "profile_train.py"
    run = subprocess.run([sys.executable, str(script), "--classic", "--vocab", "1100"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("the three float64 products")]
    assert len(lines) == 2 and "each in one product" in lines[0]
    assert f"in blocks of {output._few_rows_block(20, 101, 8)} rows" in lines[1]
    assert all("together" in line for line in lines)


def test_profile_softmax_step_splits_the_step_into_output_layer_update_and_model():
    """benchmarks/profile_softmax_step.py at a small vocabulary: for each layer, the step's time, the
    output layer's, the update's and the model's own work, which add up to the step with the timers;
    then the class layer's products alone."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "profile_softmax_step.py"
    run = subprocess.run([sys.executable, str(script), "--vocab", "600", "--chunks", "1", "--cell", "rnn",
                          "--layers", "full,class"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    blocks = run.stdout.split("\nRNN, ")[1:]
    assert [b.split(" softmax")[0] for b in blocks] == ["full", "class"]
    for block in blocks:
        with_timers = float(re.search(r"([\d.]+) ms with the timers", block).group(1))
        parts = [float(re.search(rf"([\d.]+) ms  {what}", block).group(1))
                 for what in ("the output layer", "clipping and SGD update", "everything else")]
        assert abs(sum(parts) - with_timers) < 0.1 and all(p > 0 for p in parts)
    assert "the class layer's matrix products alone, one chunk at V=600" in run.stdout
