"""The torch-free .pth reader: real weights, hand-written legacy/zip files, and hostile pickles."""

import io
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from tfmmsearch.hub.efficientnet_lite import lite0_weights_path
from tfmmsearch.hub.torch_pickle import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    TorchCheckpointError,
    UnsafePickleError,
    load_torch_state_dict,
)

# --------------------------------------------------------------------------- a torch-free writer
# To write files the way torch.save does without torch, the test registers stand-in `torch` and
# `torch._utils` modules, so pickle emits the same GLOBAL opcodes torch itself would.

STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage",
                 np.dtype("float16"): "HalfStorage", np.dtype("uint8"): "ByteStorage"}


@pytest.fixture
def fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError("the reader must not call torch")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class Storage:
    def __init__(self, key, data):
        self.key, self.data = key, np.ascontiguousarray(data).ravel()


class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.shape, self.stride, False, OrderedDict())


def tensor_of(array, key):
    array = np.asarray(array)
    return Tensor(Storage(key, array), 0, array.shape, tuple(s // array.itemsize for s in array.strides))


def _pickle_state(state, legacy):
    torch = sys.modules["torch"]

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, Storage):
                return None
            record = ("storage", getattr(torch, STORAGE_NAMES[obj.data.dtype]), obj.key, "cpu", obj.data.size)
            return record + (None,) if legacy else record

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
    return buffer.getvalue()


def _storages(state):
    return list({t.storage.key: t.storage for t in state.values() if isinstance(t, Tensor)}.values())


def write_legacy(path, state):
    parts = [pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2), pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
             _pickle_state(state, legacy=True)]
    storages = _storages(state)
    parts.append(pickle.dumps([s.key for s in storages], protocol=2))
    for storage in storages:
        parts.append(struct.pack("<q", storage.data.size) + storage.data.tobytes())
    path.write_bytes(b"".join(parts))
    return path


def write_zip(path, state):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", _pickle_state(state, legacy=False))
        archive.writestr("archive/byteorder", "little")
        for storage in _storages(state):
            archive.writestr(f"archive/data/{storage.key}", storage.data.tobytes())
    return path


WRITERS = {"legacy": write_legacy, "zip": write_zip}

# --------------------------------------------------------------------------- the real weights


@pytest.mark.slow
def test_reads_the_lite0_wheel_weights():
    state = load_torch_state_dict(lite0_weights_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    floats = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in floats)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    # Running variances are never negative (a few dead channels are exactly 0) and the weights
    # are not all zeros: real data was read, with the right dtype and byte order.
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert len(variances) == 49 and all((v >= 0).all() and v.mean() > 0.01 for v in variances)
    assert np.abs(state["_conv_head.weight"]).mean() > 1e-3


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", WRITERS)
def test_round_trips_tensors_with_strides_offsets_and_shared_storage(tmp_path, fake_torch, layout):
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((3, 4)).astype(np.float32)
    shared = Storage("s0", np.arange(10, dtype=np.float32))
    state = OrderedDict(
        conv=tensor_of(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "c"),
        transposed=Tensor(Storage("m", matrix), 0, (4, 3), (1, 4)),  # matrix.T, not contiguous
        head=Tensor(shared, 0, (2, 3), (3, 1)),
        tail=Tensor(shared, 6, (4,), (1,)),
        steps=tensor_of(np.array(7, dtype=np.int64), "n"),
        half=tensor_of(np.array([0.5, -2.0], dtype=np.float16), "h"),
        empty=Tensor(Storage("e", np.zeros(0, np.float32)), 0, (0, 5), (5, 1)),
    )
    loaded = load_torch_state_dict(WRITERS[layout](tmp_path / "w.pth", state))
    assert list(loaded) == list(state)
    np.testing.assert_array_equal(loaded["transposed"], matrix.T)
    np.testing.assert_array_equal(loaded["head"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(loaded["tail"], [6, 7, 8, 9])
    assert loaded["steps"].shape == () and loaded["steps"].dtype == np.int64 and loaded["steps"] == 7
    assert loaded["half"].dtype == np.float16 and loaded["half"].tolist() == [0.5, -2.0]
    assert loaded["empty"].shape == (0, 5)
    assert loaded["conv"].shape == (2, 3, 3, 3) and loaded["conv"].flags.writeable


def test_out_of_bounds_strides_are_refused_not_read(tmp_path, fake_torch):
    state = {"w": Tensor(Storage("s", np.zeros(4, np.float32)), 2, (2, 2), (2, 1))}  # reaches element 5
    with pytest.raises(TorchCheckpointError, match="reaches element 5 of a storage of 4"):
        load_torch_state_dict(write_legacy(tmp_path / "w.pth", state))


def test_truncated_file_is_a_clear_error(tmp_path, fake_torch):
    path = write_legacy(tmp_path / "w.pth", {"w": tensor_of(np.ones(100, np.float32), "s")})
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(TorchCheckpointError, match=r"w\.pth: storage s holds 360 bytes, 400 expected"):
        load_torch_state_dict(path)


def test_non_tensor_entries_are_rejected_by_name(tmp_path, fake_torch):
    path = write_zip(tmp_path / "w.pth", {"w": tensor_of(np.ones(2, np.float32), "s"), "epoch": 3})
    with pytest.raises(TorchCheckpointError, match=r"entry 'epoch' is not a tensor \(int\)"):
        load_torch_state_dict(path)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(TorchCheckpointError, match="notes.pth"):
        load_torch_state_dict(path)


# --------------------------------------------------------------------------- hostile pickles


class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload,global_name", [(RunsShell, "system"), (RunsEval, "eval")])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": payload(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=rf"evil\.pth: refusing to load global \S*{global_name}"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_payload_hidden_after_a_valid_legacy_header_is_refused(tmp_path, fake_torch):
    marker = tmp_path / "pwned"
    header = write_legacy(tmp_path / "ok.pth", {"w": tensor_of(np.ones(1, np.float32), "s")}).read_bytes()
    first_three = b"".join(pickle.dumps(v, protocol=2) for v in (
        LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}))
    assert header.startswith(first_three)
    path = tmp_path / "evil.pth"
    path.write_bytes(first_three + pickle.dumps(OrderedDict(w=RunsShell(marker)), protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_payload_inside_a_zip_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": RunsEval(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"global \S*eval"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_the_payloads_would_run_under_plain_pickle(tmp_path):
    """Proves the refusal tests above use live payloads (a harmless touch into tmp_path)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(RunsEval(marker)))
    assert marker.exists()
