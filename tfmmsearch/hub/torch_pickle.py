"""Reads PyTorch state-dict files (.pth/.pt) into numpy arrays without importing torch.

A .pth file is a pickle, and `pickle.load` runs whatever callables the file names, so a
downloaded checkpoint is code, not data. This reader only ever lets a pickle name the handful
of globals that rebuild tensors (mapped to numpy-building functions defined here); any other
global raises `UnsafePickleError` before it is called. Both on-disk layouts are read:

- legacy (torch < 1.6): back-to-back pickles (magic number, protocol version, system info,
  the state dict, the storage keys) followed by each storage as int64 element count + raw bytes;
- zip (torch >= 1.6): `<archive>/data.pkl` plus one `<archive>/data/<key>` entry per storage.

In both, tensors point at storages through pickle "persistent ids", resolved here by key.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype of its elements (bfloat16 is widened on load).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the tensor-rebuilding allow-list; nothing was called."""


class TorchCheckpointError(ValueError):
    """The file is not a state dict this reader understands (truncated, malformed, unsupported)."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for torch.FloatStorage & co. inside one load: it only carries the dtype."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A tensor's storage: `key` names the stored bytes, `offset` counts elements into them."""

    key: str
    dtype: np.dtype
    numel: int
    offset: int = 0


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes are read after the pickle (legacy files store them last)."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(_is_int(v) and v >= 0 for v in value)


class _TensorUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals rebuild tensors; everything else is refused."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, numel)
        # Built per load, so a pickle's BUILD opcode can never alter state shared between loads.
        allowed: dict[tuple[str, str], Any] = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("collections", "OrderedDict"): OrderedDict,
        }
        for name, dtype in STORAGE_DTYPES.items():
            allowed[("torch", name)] = _StorageType(name, dtype)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name}; only the globals that "
                f"rebuild tensors are allowed ({', '.join(sorted(f'{m}.{n}' for m, n in self._allowed))})"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # legacy: ('storage', type, key, location, numel, view_metadata); zip: the first five.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise TorchCheckpointError(f"{self.source}: unsupported persistent id {pid!r:.200}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not _is_int(numel) \
                or numel < 0:
            raise TorchCheckpointError(f"{self.source}: malformed storage record {pid!r:.200}")
        known = self.storages.setdefault(key, (storage_type.dtype, numel))
        if known != (storage_type.dtype, numel):
            raise TorchCheckpointError(f"{self.source}: storage {key} is declared twice, differently")
        if view is None:
            return _StorageRef(key, storage_type.dtype, numel)
        # Legacy storage views: a slice [offset, offset + size) of another storage.
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                and _is_int(view[1]) and _is_int(view[2]) and view[1] >= 0 and view[2] >= 0
                and view[1] + view[2] <= numel):
            raise TorchCheckpointError(f"{self.source}: malformed storage view {view!r:.200}")
        return _StorageRef(key, storage_type.dtype, view[2], offset=view[1])

    def _rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False,
                        backward_hooks=None, metadata=None) -> _PendingTensor:
        if not isinstance(storage, _StorageRef) or not _is_int(storage_offset) or storage_offset < 0 \
                or not _int_tuple(size) or not _int_tuple(stride) or len(size) != len(stride):
            raise TorchCheckpointError(
                f"{self.source}: malformed tensor record (offset={storage_offset!r:.50}, "
                f"size={size!r:.100}, stride={stride!r:.100})")
        # Refuse any tensor that would read past its storage (as_strided would read foreign memory).
        if all(size):
            last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= storage.numel:
                raise TorchCheckpointError(
                    f"{self.source}: tensor of shape {size} with strides {stride} at offset "
                    f"{storage_offset} reaches element {last} of a storage of {storage.numel}")
        return _PendingTensor(storage, storage_offset, size, stride)

    @staticmethod
    def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> Any:
        return data


def _run(unpickler: _TensorUnpickler) -> Any:
    """Runs a restricted load, turning the many ways a corrupt pickle fails into one error type."""
    try:
        return unpickler.load()
    except (UnsafePickleError, TorchCheckpointError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError) as error:
        raise TorchCheckpointError(f"{unpickler.source}: not a readable PyTorch pickle ({error})") from error


def _load_plain(stream, source: str) -> Any:
    return _run(_TensorUnpickler(stream, source))


def _materialise(pending: _PendingTensor, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[pending.storage.key][pending.storage.offset:]
    itemsize = flat.dtype.itemsize
    if not all(pending.shape):
        array = np.zeros(pending.shape, flat.dtype)
    else:
        view = np.lib.stride_tricks.as_strided(
            flat[pending.offset:], shape=pending.shape,
            strides=tuple(s * itemsize for s in pending.stride), writeable=False)
        array = np.array(view, copy=True)
    if pending.storage.dtype == STORAGE_DTYPES["BFloat16Storage"]:  # top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _to_state_dict(loaded: Any, storages: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    if not isinstance(loaded, dict):
        raise TorchCheckpointError(f"{source}: expected a state dict (name -> tensor), got {type(loaded).__name__}")
    state: dict[str, np.ndarray] = {}
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, _PendingTensor):
            raise TorchCheckpointError(
                f"{source}: entry {name!r:.100} is not a tensor ({type(value).__name__}); "
                "only flat state dicts (name -> tensor) are supported")
        state[name] = _materialise(value, storages)
    return state


def _check_storage_bytes(key: str, data: bytes, dtype: np.dtype, numel: int, source: str) -> np.ndarray:
    if len(data) < numel * dtype.itemsize:
        raise TorchCheckpointError(
            f"{source}: storage {key} holds {len(data)} bytes, {numel * dtype.itemsize} expected (truncated?)")
    return np.frombuffer(data, dtype=dtype, count=numel)


def _load_legacy(raw: bytes, source: str) -> dict[str, np.ndarray]:
    stream = io.BytesIO(raw)
    magic = _load_plain(stream, source)
    if magic != LEGACY_MAGIC_NUMBER:
        raise TorchCheckpointError(f"{source}: not a PyTorch file (bad magic number)")
    protocol = _load_plain(stream, source)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise TorchCheckpointError(f"{source}: unsupported legacy protocol version {protocol!r:.50}")
    sys_info = _load_plain(stream, source)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise TorchCheckpointError(f"{source}: only little-endian checkpoints are supported")
    unpickler = _TensorUnpickler(stream, source)
    loaded = _run(unpickler)
    keys = _load_plain(stream, source)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchCheckpointError(f"{source}: malformed storage key list")
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in unpickler.storages:
            raise TorchCheckpointError(f"{source}: storage {key} is stored but no tensor declares it")
        dtype, numel = unpickler.storages[key]
        header = stream.read(8)
        if len(header) != 8:
            raise TorchCheckpointError(f"{source}: file ends before storage {key} (truncated?)")
        (stored_numel,) = struct.unpack("<q", header)
        if stored_numel != numel:
            raise TorchCheckpointError(
                f"{source}: storage {key} holds {stored_numel} elements, its tensors declare {numel}")
        storages[key] = _check_storage_bytes(key, stream.read(numel * dtype.itemsize), dtype, numel, source)
    missing = sorted(set(unpickler.storages) - set(storages))
    if missing:
        raise TorchCheckpointError(f"{source}: storages {missing[:5]} are declared but not stored")
    return _to_state_dict(loaded, storages, source)


def _load_zip(path: Path, source: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchCheckpointError(f"{source}: zip checkpoint without exactly one <archive>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() != b"little":
            raise TorchCheckpointError(f"{source}: only little-endian checkpoints are supported")
        unpickler = _TensorUnpickler(io.BytesIO(archive.read(pickles[0])), source)
        loaded = _run(unpickler)
        storages: dict[str, np.ndarray] = {}
        for key, (dtype, numel) in unpickler.storages.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise TorchCheckpointError(f"{source}: storage entry {entry} is missing")
            storages[key] = _check_storage_bytes(key, archive.read(entry), dtype, numel, source)
    return _to_state_dict(loaded, storages, source)


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (legacy or zip .pth) into name -> numpy array, never running code.

    Raises UnsafePickleError if the pickle names any global other than the tensor-rebuilding
    ones (nothing it names is called), TorchCheckpointError for files it cannot read.
    """
    path = Path(path)
    source = str(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path, source)
    return _load_legacy(path.read_bytes(), source)
