"""Models past protobuf's 2 GB limit: weights streamed to a data file of ours, written where it is safe.

A model whose weights live in ONNX external data is built here without ever holding them all: each
weight is read memory-mapped from the input's data file (opened read-only, never for writing), sliced,
appended to the output's data file and dropped, and its ``TensorProto`` is left pointing at that file.
The model proto itself stays small, so shape inference and ``onnx.checker`` run on it as on any model.

Where the files go is decided here and nowhere else, because ``onnx.save_model`` and onnx's external
data helpers write wherever a tensor's ``location`` says (the CVE-2025-51480 class):

- the data file's name is ours, ``<output name>.data``, never a ``location`` read from the input;
- everything is written into a fresh private folder inside the output's folder and published by
  ``os.replace`` once complete (data first, model last), so a failure or an interruption leaves no
  partial output, and nothing is ever written outside the output's folder;
- an output model or data path that is a symbolic link is refused rather than written through (a
  symlinked *folder* is the user's choice of place and is resolved: both files land side by side in it);
- an output data path that is one of the input's own data files is refused (publishing it would change
  the input model's weights).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphcore.errors import ModelLoadError, ZigraphError


def human_bytes(n: float) -> str:
    """``n`` bytes as people read it (1.3 MB, 4.3 GB)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def inline_array(t: onnx.TensorProto) -> np.ndarray:
    """The values of a tensor stored in the model, or bad input when its data does not fill its declared
    shape. The loader counts only small tensors' raw bytes (counting copies them), so a large one is
    checked here, where it is read: a mutated dim (2**40 over 13 floats) is the model's fault, not ours."""
    try:
        return numpy_helper.to_array(t)
    except ValueError as exc:
        raise ModelLoadError(
            f"invalid ONNX graph (tensor '{t.name}' of shape {list(t.dims)} does not hold its values: {exc})"
        ) from None


__all__ = [
    "ALIGN",
    "DEFAULT_THRESHOLD",
    "DataWriter",
    "LazyArrays",
    "StagedOutput",
    "external_files",
    "inline_array",
    "read_external",
    "stored_bytes",
]

ALIGN = 65536  # offsets of tensors in our data files: a multiple of every page size, so they can be mapped
DEFAULT_THRESHOLD = 1_800_000_000  # bytes of weights above which a model is written with external data
INLINE_LIMIT = 1024  # a tensor of at most this many bytes stays in the proto (shape operands, scalars)
_CHUNK = 1 << 26
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MARK = "zigraph_written"  # on our tensors while a model is built; removed by DataWriter.seal


def _info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _inside(base: Path, location: str) -> Path:
    """The data file ``location`` names, refused when it leaves ``base`` (absolute, ``..``, a link out)."""
    target = (base / location).resolve()
    if os.path.isabs(location) or os.path.commonpath([str(target), str(base.resolve())]) != str(
        base.resolve()
    ):
        raise ZigraphError(f"external data location {location!r} points outside the model's folder; refused")
    return target


def _np_dtype(t: onnx.TensorProto) -> np.dtype | None:
    """The numpy dtype of a tensor whose bytes are one value per item (None: packed or not numeric)."""
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    except Exception:
        return None
    if dt.kind in "OUS" or t.data_type in _PACKED:
        return None
    return dt


_PACKED = {
    getattr(onnx.TensorProto, n)
    for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
    if hasattr(onnx.TensorProto, n)
}


def read_external(t: onnx.TensorProto, base: Path) -> np.ndarray:
    """A read-only, memory-mapped view of an external tensor (pages are read as they are touched and
    given back when the view is dropped); packed sub-byte types are read whole by onnx."""
    info = _info(t)
    path = _inside(base, info.get("location", ""))
    dt = _np_dtype(t)
    shape = tuple(int(d) for d in t.dims)
    n = math.prod(shape)
    offset = int(info.get("offset", 0))
    length = int(info["length"]) if "length" in info else None
    if dt is None or n == 0 or (length is not None and length != n * dt.itemsize):
        return numpy_helper.to_array(t, base_dir=str(base))
    if offset + n * dt.itemsize > path.stat().st_size:
        raise ZigraphError(f"external data of tensor '{t.name}' runs past the end of {path.name}")
    arr = np.memmap(path, dtype=dt.newbyteorder("<"), mode="r", offset=offset, shape=shape)
    return arr if dt.byteorder in "=|<" or dt.itemsize == 1 else arr.astype(dt)


def external_files(model: onnx.ModelProto, base: Path | None) -> set[Path]:
    """The data files a model's tensors read (resolved), so an output never replaces one of them."""
    if base is None:
        return set()
    out = set()
    for t in _all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = _info(t).get("location")
            if loc:
                out.add((base / loc).resolve())
    return out


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes, subgraphs included (every tensor a file can store)."""

    def walk(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from g.initializer
        for pn in g.node:
            for att in pn.attribute:
                if att.type == onnx.AttributeProto.TENSOR:
                    yield att.t
                elif att.type == onnx.AttributeProto.GRAPH:
                    yield from walk(att.g)
                elif att.type == onnx.AttributeProto.GRAPHS:
                    for sg in att.graphs:
                        yield from walk(sg)

    yield from walk(model.graph)


def _nbytes(t: onnx.TensorProto) -> int:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        info = _info(t)
        if "length" in info:
            return int(info["length"])
    dt = _np_dtype(t)
    return math.prod(int(d) for d in t.dims) * (dt.itemsize if dt is not None else 1)


def stored_bytes(model: onnx.ModelProto) -> int:
    """Bytes of weights the model stores, inline or external: decides external data for its output
    before anything is built (the output is never larger than its input by more than shape operands)."""
    return sum(_nbytes(t) for t in _all_tensors(model))


class LazyArrays(Mapping[str, np.ndarray]):
    """Weights by name, each read (memory-mapped) when asked for and not kept: a norm over a model's
    weights then holds one tensor at a time, not the model."""

    def __init__(self, load, names: list[str]) -> None:
        self._load, self._names = load, list(dict.fromkeys(names))

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class DataWriter:
    """One data file of ours, appended to tensor by tensor (the ``sink`` construct writes weights to).

    ``put`` writes an array and points its tensor at it; ``rest`` moves every tensor still stored in
    the input's data (a weight nothing changed) or held inline above ``INLINE_LIMIT`` bytes into the file,
    copying in chunks, so the proto that is serialized holds no weights."""

    def __init__(self, path: Path, location: str) -> None:
        self.location = location
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644
        )
        self._f = os.fdopen(fd, "wb")
        self.offset = 0
        self.tensors = 0

    def _start(self, length: int) -> int:
        """Where the next tensor goes: a mappable (``ALIGN``) offset for a big one, 16 bytes otherwise."""
        align = ALIGN if length >= ALIGN else 16
        start = -(-self.offset // align) * align
        if start != self.offset:
            self._f.seek(start)
        return start

    def _point(self, t: onnx.TensorProto, start: int, length: int) -> None:
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(field)
        del t.external_data[:]
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (
            ("location", self.location),
            ("offset", str(start)),
            ("length", str(length)),
            (_MARK, ""),
        ):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.offset = start + length
        self.tensors += 1

    def put(self, t: onnx.TensorProto, arr: np.ndarray) -> None:
        """Write ``arr`` (cast to the tensor's type) as the data of ``t``."""
        dt = _np_dtype(t)
        if dt is None:  # packed or exotic: onnx's own encoding, then its bytes
            data = memoryview(numpy_helper.from_array(np.asarray(arr), t.name).raw_data)
        else:
            arr = np.ascontiguousarray(np.asarray(arr).astype(dt.newbyteorder("<"), copy=False))
            data = memoryview(arr.reshape(-1).view(np.uint8).data)
        del t.dims[:]
        t.dims.extend(int(d) for d in np.shape(arr))
        start = self._start(len(data))
        for k in range(0, len(data), _CHUNK):
            self._f.write(data[k : k + _CHUNK])
        self._point(t, start, len(data))

    def _copy(self, t: onnx.TensorProto, base: Path) -> None:
        info = _info(t)
        src = _inside(base, info.get("location", ""))
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else src.stat().st_size - offset
        start = self._start(length)
        with open(src, "rb") as f:  # read-only: the input's data is never opened for writing
            f.seek(offset)
            left = length
            while left:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise ZigraphError(f"external data of tensor '{t.name}' runs past the end of {src.name}")
                self._f.write(chunk)
                left -= len(chunk)
        self._point(t, start, length)

    def rest(self, model: onnx.ModelProto, base: Path | None) -> None:
        for t in _all_tensors(model):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                if _MARK in _info(t):
                    continue  # ours already
                if base is None:
                    raise ZigraphError(
                        f"tensor '{t.name}' uses external data but the model folder is unknown"
                    )
                self._copy(t, base)
            elif t.data_type != onnx.TensorProto.STRING and _nbytes(t) > INLINE_LIMIT:
                self.put(t, inline_array(t))

    def seal(self, model: onnx.ModelProto) -> None:
        """Drop the marks ``rest`` tells our tensors by (an input may name a file like ours), then close."""
        for t in _all_tensors(model):
            if t.data_location == onnx.TensorProto.EXTERNAL and _MARK in _info(t):
                keep = [(e.key, e.value) for e in t.external_data if e.key != _MARK]
                del t.external_data[:]
                for k, v in keep:
                    e = t.external_data.add()
                    e.key, e.value = k, v
        self.close()

    def close(self) -> None:
        self._f.truncate(self.offset)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()


class StagedOutput:
    """An output model (and its data file) written into a private folder beside ``target`` and published
    by rename. Use as a context manager: leaving it without ``publish`` removes everything written."""

    def __init__(
        self, target: str | os.PathLike, inputs: Collection[Path] = (), data_name: str | None = None
    ) -> None:
        target = Path(target)
        if target.is_symlink():
            raise ZigraphError(
                f"output {target} is a symbolic link; refused (zigraph does not write through links)"
            )
        self.folder = target.parent.resolve()  # a symlinked folder is the place the user chose
        self.target = self.folder / target.name
        self.data_name = data_name or target.name + ".data"
        if Path(self.data_name).name != self.data_name or self.data_name in ("", ".", ".."):
            raise ZigraphError(f"the data file name {self.data_name!r} must be a plain file name")
        self.data_target = self.folder / self.data_name
        if self.data_target.is_symlink():
            raise ZigraphError(
                f"{self.data_target} is a symbolic link; refused (zigraph does not write through links)"
            )
        if self.data_target.resolve() in set(inputs) or self.target.resolve() in set(inputs):
            raise ZigraphError(
                f"the output's data file {self.data_target} is the input's own external data; "
                "choose another output name"
            )
        if self.target.is_dir():
            raise ZigraphError(f"output {target} is a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=".zigraph-", dir=self.folder))
        self.model = self.dir / target.name
        self.data = self.dir / self.data_name
        self.published: Path | None = None

    def writer(self) -> DataWriter:
        """The data file of the staged output (its ``location`` is the published data file's name)."""
        return DataWriter(self.data, self.data_name)

    def scratch(self, name: str) -> Path:
        """A private path for temporary files (a zeroed copy for verification); removed at the end."""
        return self.dir / name

    def publish(self) -> Path:
        """Data file first, then the model: a reader never sees a model whose data is missing."""
        if self.data.exists():
            os.replace(self.data, self.data_target)
        os.replace(self.model, self.target)
        self.published = self.target
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def write_proto(model: onnx.ModelProto, path: Path) -> None:
    """Serialize a (weight-free) model to ``path``: a new file, never through a link."""
    data = model.SerializeToString()
    with os.fdopen(_create(path), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _create(path: Path) -> int:
    """A new file for writing: never an existing one, never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o644)
