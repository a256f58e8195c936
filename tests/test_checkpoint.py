import hashlib
import json
import os
import pickle
import sys

import numpy as np
import pytest

from rnnlab.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from rnnlab.model import ModelConfig
from rnnlab.errors import CheckpointError, RnnlabError
from rnnlab.optim import make_optimizer

V, H = 6, 4
SHAPES = ModelConfig(V, H, embed_size=H).param_shapes()  # a word_language_model layout
VOCAB = {"itos": ["<unk>", "<eos>", "the", "cat", "sat", "mat"]}
CONFIG = {"cell": "rnn", "vocab_size": V, "hidden": H, "layers": 1}


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def save(directory, params, *, optimizer=None, step=0):
    pytest.importorskip("safetensors")
    state = {"epoch": 1, "step": step, "tokens": 10 * step, "lr": 0.1,
             "schedule": {"factor": 0.5, "previous": None}, "position": 3}
    return save_checkpoint(directory, params=params, config=CONFIG, vocab=VOCAB, optimizer=optimizer,
                           state=state)


def tensor_file(directory, kind="model"):
    doc = json.loads((directory / "checkpoint.json").read_text())
    return directory / doc["files"][kind]["name"]


def rewrite_hash(directory, kind="model"):
    """Make the JSON agree with a tampered tensor file, so the tensor parser itself is exercised."""
    path = directory / "checkpoint.json"
    doc = json.loads(path.read_text())
    doc["files"][kind]["sha256"] = hashlib.sha256(tensor_file(directory, kind).read_bytes()).hexdigest()
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roundtrip_exact(tmp_path, dtype):
    params = make_params(dtype=dtype)
    params["decoder.weight"] = np.asfortranarray(params["decoder.weight"])  # non-contiguous input too
    opt = make_optimizer("adam", params, lr=0.01)
    opt.step(make_params(1, dtype))
    save(tmp_path, params, optimizer=opt.state_dict(), step=5)
    ck = load_checkpoint(tmp_path)
    assert ck.params.keys() == params.keys()
    for k, p in params.items():
        assert ck.params[k].dtype == dtype
        np.testing.assert_array_equal(ck.params[k], p)
        assert ck.params[k].flags.writeable
    arrays, meta = opt.state_dict()
    assert ck.optimizer_meta == meta
    for k, a in arrays.items():
        np.testing.assert_array_equal(ck.optimizer_arrays[k], a)
    assert ck.config == CONFIG and ck.vocab == VOCAB
    assert ck.state["step"] == 5 and ck.state["position"] == 3
    check_compatible(ck, SHAPES, VOCAB)


def test_without_optimizer(tmp_path):
    save(tmp_path, make_params())
    assert load_checkpoint(tmp_path).optimizer_arrays is None
    assert not list(tmp_path.glob("optimizer-*"))


def test_truncated_tensor_file(tmp_path):
    save(tmp_path, make_params())
    path = tensor_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        load_checkpoint(tmp_path)
    rewrite_hash(tmp_path)
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        load_checkpoint(tmp_path)


def test_missing_tensor_file(tmp_path):
    save(tmp_path, make_params())
    tensor_file(tmp_path).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content,match", [
    ('{"name": "some-package", "version": "1.0"}', "not an rnnlab checkpoint"),
    ("[1, 2, 3]", "not an rnnlab checkpoint"),
    ("model = rnn\n", "not a readable JSON"),
    ('{"format": "rnnlab-checkpoint", "version": 2}', "version 2"),
])
def test_foreign_or_newer_json(tmp_path, content, match):
    (tmp_path / "checkpoint.json").write_text(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path)


def test_missing_directory_or_json(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint.json"):
        load_checkpoint(tmp_path)


class Marker:
    """Unpickling this creates the file at ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "marker"
    directory = tmp_path / "ck"
    save(directory, make_params())
    path = tensor_file(directory)
    path.write_bytes(pickle.dumps(Marker(marker)))
    (directory / "model.safetensors").write_bytes(pickle.dumps(Marker(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(directory)
    rewrite_hash(directory)  # even with a matching hash, the parser refuses it
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        load_checkpoint(directory)
    assert not marker.exists()


def test_wrong_dtype_refused(tmp_path):
    save(tmp_path, make_params())
    import safetensors.numpy

    ints = {k: np.zeros(s, np.int32) for k, s in SHAPES.items()}
    tensor_file(tmp_path).write_bytes(safetensors.numpy.save(ints))
    rewrite_hash(tmp_path)
    with pytest.raises(CheckpointError, match="int32"):
        load_checkpoint(tmp_path)


def test_tensor_name_cannot_leave_directory(tmp_path):
    save(tmp_path / "ck", make_params())
    path = tmp_path / "ck" / "checkpoint.json"
    doc = json.loads(path.read_text())
    doc["files"]["model"]["name"] = "../elsewhere.safetensors"
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="plain file name"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch, failing_call):
    old = make_params(0)
    opt = make_optimizer("momentum", old, lr=0.1)
    save(tmp_path, old, optimizer=opt.state_dict(), step=1)
    new = make_params(1)
    calls = []
    real_replace = os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == failing_call:
            raise OSError("disk on fire")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointError, match="disk on fire"):
        save(tmp_path, new, optimizer=make_optimizer("momentum", new, lr=0.1).state_dict(), step=2)
    monkeypatch.undo()
    assert len(calls) == failing_call
    ck = load_checkpoint(tmp_path)
    assert ck.state["step"] == 1
    for k, p in old.items():
        np.testing.assert_array_equal(ck.params[k], p)
    assert not list(tmp_path.glob(".*.tmp"))
    # the next save succeeds and tidies up the files the interrupted one left
    save(tmp_path, new, step=3)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.json", tensor_file(tmp_path).name}
    assert load_checkpoint(tmp_path).state["step"] == 3


def test_resave_same_directory_removes_old_tensors(tmp_path):
    for step in range(3):
        opt = make_optimizer("adam", make_params(step), lr=0.1)
        save(tmp_path, make_params(step), optimizer=opt.state_dict(), step=step)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    bias = load_checkpoint(tmp_path).params["decoder.bias"]
    np.testing.assert_array_equal(bias, make_params(2)["decoder.bias"])


def test_shape_mismatch_names_parameter(tmp_path):
    save(tmp_path, make_params())
    ck = load_checkpoint(tmp_path)
    wrong = {**SHAPES, "rnn.weight_hh_l0": (H + 1, H + 1)}
    with pytest.raises(CheckpointError, match=r"'rnn.weight_hh_l0'.*\(4, 4\).*\(5, 5\)"):
        check_compatible(ck, wrong, None)
    with pytest.raises(CheckpointError, match="'rnn.weight_ih_l1'"):
        check_compatible(ck, {**SHAPES, "rnn.weight_ih_l1": (H, H)}, None)
    with pytest.raises(CheckpointError, match="'decoder.bias' is not in the model"):
        check_compatible(ck, {k: s for k, s in SHAPES.items() if k != "decoder.bias"}, None)


def test_vocab_mismatch(tmp_path):
    save(tmp_path, make_params())
    ck = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="vocabulary.*'itos'"):
        check_compatible(ck, SHAPES, {"itos": VOCAB["itos"][::-1]})


def test_missing_safetensors_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(RnnlabError, match=r"pip install 'rnnlab\[cli\]'"):
        save_checkpoint(tmp_path, params=make_params(), config={}, vocab=None, optimizer=None, state={})


def test_a_changed_number_is_caught_by_the_hash(tmp_path):
    """One byte of tensor data changed keeps the file well-formed: only the sha256 can tell."""
    save(tmp_path, make_params())
    path = tensor_file(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01  # the last byte of the last tensor's data
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        load_checkpoint(tmp_path)
    rewrite_hash(tmp_path)
    load_checkpoint(tmp_path)  # the same bytes with a matching hash load: it was the hash that refused
