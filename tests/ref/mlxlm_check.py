#!/usr/bin/env python3
"""Would Apple's mlx-lm load this MLX checkpoint with strict weight loading?

MLX cannot be installed on our machines (no Linux wheels reachable) and CI cannot reach GitHub,
but mlx-lm is plain Python on top of `mlx.core` and `mlx.nn`. This file is a shape-only stand-in
for those two modules (and `mlx.utils`): arrays carry a shape, a dtype and the names of the file
tensors they came from, never data. With it installed, mlx-lm's own code runs unchanged from a
checkout given on the command line: `mlx_lm.utils.load_model` reads config.json, picks the model
class by model_type, builds `Model(ModelArgs.from_dict(config))`, reads the weights (here: only
the safetensors headers), calls the family's `sanitize()`, quantizes the modules the config and
the files say (`nn.quantize` with load_model's class predicate), and calls
`model.load_weights(weights, strict=True)`. Our `load_weights` does what mlx's does (names, then
shapes, raising the same first error) and also records every unexpected, missing and mis-shaped
parameter, which this script reports.

    python3 tests/ref/mlxlm_check.py --mlx-lm /tmp/mlxlm CHECKPOINT_DIR [--json]

exit 0: the load succeeds (and every quantized module holds uint32 weights with floating scales,
which mlx's kernels require at the first forward); 1: it fails; 2: bad usage.

Nothing here is mlx-lm's code: its checkout is imported from the path given. The stand-in follows
mlx's documented semantics (mlx/python/mlx/nn/layers/base.py, quantized.py, mlx/utils.py and the
shape rules of mlx/ops.cpp: quantize, dequantize, broadcasting, split, pad, view).
"""

import argparse
import importlib
import importlib.util
import json
import math
import os
import struct
import sys
import types

# ------------------------------------------------------------------------------------------------
# safetensors headers: 8-byte little-endian header length, then a JSON object
# name -> {dtype, shape, data_offsets}; the data is never read.
# ------------------------------------------------------------------------------------------------

# safetensors dtype string -> (mlx dtype name, bytes per element). mlx reads both FP8 kinds as
# uint8 (mlx/io/safetensors.cpp) and refuses F64 and anything else it does not list.
ST_DTYPES = {
    "BOOL": ("bool_", 1), "U8": ("uint8", 1), "U16": ("uint16", 2), "U32": ("uint32", 4),
    "U64": ("uint64", 8), "I8": ("int8", 1), "I16": ("int16", 2), "I32": ("int32", 4),
    "I64": ("int64", 8), "F16": ("float16", 2), "BF16": ("bfloat16", 2), "F32": ("float32", 4),
    "C64": ("complex64", 8), "F8_E4M3": ("uint8", 1), "F8_E8M0": ("uint8", 1),
}


class HeaderError(Exception):
    pass


def read_safetensors_header(path):
    """The header of one safetensors file: ({name: (st_dtype, shape)}, metadata).
    Raises HeaderError naming the file and tensor for anything mlx could not load."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise HeaderError(f"{path}: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8 or n > 100 << 20:
            raise HeaderError(f"{path}: header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise HeaderError(f"{path}: header is not JSON ({e})")
    if not isinstance(header, dict):
        raise HeaderError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    data_len = size - 8 - n
    out = {}
    for name, info in header.items():
        try:
            dt, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise HeaderError(f"{path}: tensor {name}: malformed header entry")
        if dt not in ST_DTYPES:
            raise HeaderError(f"{path}: tensor {name}: dtype {dt} is not one mlx loads")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise HeaderError(f"{path}: tensor {name}: bad shape {shape}")
        nbytes = math.prod(shape) * ST_DTYPES[dt][1]
        if not (0 <= b <= e <= data_len) or e - b != nbytes:
            raise HeaderError(f"{path}: tensor {name}: data_offsets [{b}, {e}) do not hold "
                              f"{shape} {dt} inside the file's {data_len} data bytes")
        out[name] = (dt, tuple(shape))
    return out, meta


# ------------------------------------------------------------------------------------------------
# mlx.core, shape only
# ------------------------------------------------------------------------------------------------

class Dtype:
    def __init__(self, name, size, kind):
        self.name, self.size, self.kind = name, size, kind  # kind: b u i f c

    def __repr__(self):
        return f"mlx.core.{self.name}"

    def __str__(self):
        return self.name


class DtypeCategory:
    def __init__(self, name, kinds):
        self.name, self.kinds = name, kinds

    def __repr__(self):
        return f"mlx.core.{self.name}"


DTYPES = {d.name: d for d in [
    Dtype("bool_", 1, "b"), Dtype("uint8", 1, "u"), Dtype("uint16", 2, "u"),
    Dtype("uint32", 4, "u"), Dtype("uint64", 8, "u"), Dtype("int8", 1, "i"),
    Dtype("int16", 2, "i"), Dtype("int32", 4, "i"), Dtype("int64", 8, "i"),
    Dtype("float16", 2, "f"), Dtype("bfloat16", 2, "f"), Dtype("float32", 4, "f"),
    Dtype("float64", 8, "f"), Dtype("complex64", 8, "c")]}
CATEGORIES = {c.name: c for c in [
    DtypeCategory("generic", "buifc"), DtypeCategory("number", "uifc"),
    DtypeCategory("integer", "ui"), DtypeCategory("signedinteger", "i"),
    DtypeCategory("unsignedinteger", "u"), DtypeCategory("inexact", "fc"),
    DtypeCategory("floating", "f"), DtypeCategory("complexfloating", "c")]}
ST_OF_DTYPE = {"bool_": "BOOL", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64",
               "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64", "float16": "F16",
               "bfloat16": "BF16", "float32": "F32", "complex64": "C64"}
F32, U32, BOOL = DTYPES["float32"], DTYPES["uint32"], DTYPES["bool_"]


def issubdtype(a, b):
    if isinstance(b, Dtype):
        return isinstance(a, Dtype) and a is b
    if isinstance(a, Dtype):
        return a.kind in b.kinds
    return set(a.kinds) <= set(b.kinds)


def promote(a, b):
    """Result dtype of a binary op between two arrays (mlx's table, simplified: equal kinds take
    the wider; float16 with bfloat16 gives float32; a float beats an integer)."""
    if a is b:
        return a
    order = "buifc"
    if a.kind != b.kind:
        hi, lo = (a, b) if order.index(a.kind) > order.index(b.kind) else (b, a)
        if hi.kind in "ui" and lo.kind in "ui":  # signed with unsigned: the next signed size up
            size = max(a.size * (2 if a.kind == "u" else 1), b.size * (2 if b.kind == "u" else 1))
            return DTYPES[{1: "int8", 2: "int16", 4: "int32"}.get(size, "int64")]
        return hi
    if {a.name, b.name} == {"float16", "bfloat16"}:
        return F32
    return a if a.size >= b.size else b


class ShapeError(ValueError):
    """What mlx raises (ValueError / std::invalid_argument) for shapes an op cannot take."""


def _dt(d):
    if d is None or isinstance(d, Dtype):
        return d
    raise TypeError(f"not an mlx dtype: {d!r}")


def _src(*arrays):
    """The file tensors a result derives from: the union of its inputs', in order."""
    out = []
    for a in arrays:
        if isinstance(a, array):
            for s in a.src:
                if s not in out:
                    out.append(s)
    return tuple(out)


def _norm_axis(ax, ndim, op):
    if not -ndim <= ax < ndim:
        raise ShapeError(f"[{op}] axis {ax} is out of bounds for array with {ndim} dimensions")
    return ax % ndim


def _broadcast(op, *shapes):
    nd = max(len(s) for s in shapes)
    out = []
    for i in range(nd):
        dims = {s[len(s) - nd + i] for s in shapes if len(s) - nd + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(f"[{op}] Shapes {' and '.join(str(tuple(s)) for s in shapes)} "
                             "cannot be broadcast.")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _scalar_dtype(v):
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return DTYPES["int32"]
    if isinstance(v, float):
        return F32
    if isinstance(v, complex):
        return DTYPES["complex64"]
    raise TypeError(f"not an mlx scalar: {v!r}")


class array:
    """An mlx array without data: shape, dtype and src (names of the file tensors it derives
    from, so that a model parameter can be traced back to what the files hold)."""

    __hash__ = object.__hash__  # identity, as mlx arrays hash

    def __init__(self, val=None, dtype=None, *, _shape=None, _src=()):
        if _shape is not None:
            self.shape, self.dtype, self.src = tuple(int(d) for d in _shape), dtype, tuple(_src)
            return
        if isinstance(val, array):
            self.shape, self.dtype, self.src = val.shape, _dt(dtype) or val.dtype, val.src
            return
        shape, leaf = [], val
        while isinstance(leaf, (list, tuple)):
            shape.append(len(leaf))
            if not leaf:
                leaf = 0.0
                break
            leaf = leaf[0]
        if isinstance(leaf, array):
            shape += list(leaf.shape)
            base = leaf.dtype
        else:
            base = _scalar_dtype(leaf)
        self.shape, self.dtype, self.src = tuple(shape), _dt(dtype) or base, ()

    # -- properties
    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def itemsize(self):
        return self.dtype.size

    @property
    def nbytes(self):
        return self.size * self.dtype.size

    @property
    def T(self):
        return self.transpose()

    def __repr__(self):
        return f"array(shape={self.shape}, dtype={self.dtype})"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        raise ValueError("shape-only stand-in: an array's value is unknown (no data is read)")

    def item(self):
        raise ValueError("shape-only stand-in: an array's value is unknown (no data is read)")

    tolist = item

    # -- element-wise arithmetic (numpy broadcasting; a python scalar does not promote)
    def _bin(self, other, op, result=None):
        if isinstance(other, array):
            shape = _broadcast(op, self.shape, other.shape)
            dt = promote(self.dtype, other.dtype)
        else:
            shape, dt = self.shape, self.dtype
            if isinstance(other, float) and dt.kind not in "fc":
                dt = F32
        if result == "bool":
            dt = BOOL
        elif result == "float" and dt.kind not in "fc":
            dt = F32
        return array(_shape=shape, dtype=dt, _src=_src(self, other))

    def __add__(self, o): return self._bin(o, "add")
    def __radd__(self, o): return self._bin(o, "add")
    def __sub__(self, o): return self._bin(o, "subtract")
    def __rsub__(self, o): return self._bin(o, "subtract")
    def __mul__(self, o): return self._bin(o, "multiply")
    def __rmul__(self, o): return self._bin(o, "multiply")
    def __truediv__(self, o): return self._bin(o, "divide", "float")
    def __rtruediv__(self, o): return self._bin(o, "divide", "float")
    def __floordiv__(self, o): return self._bin(o, "floor_divide")
    def __rfloordiv__(self, o): return self._bin(o, "floor_divide")
    def __mod__(self, o): return self._bin(o, "remainder")
    def __rmod__(self, o): return self._bin(o, "remainder")
    def __pow__(self, o): return self._bin(o, "power")
    def __rpow__(self, o): return self._bin(o, "power")
    def __and__(self, o): return self._bin(o, "logical_and")
    def __rand__(self, o): return self._bin(o, "logical_and")
    def __or__(self, o): return self._bin(o, "logical_or")
    def __ror__(self, o): return self._bin(o, "logical_or")
    def __xor__(self, o): return self._bin(o, "bitwise_xor")
    def __lshift__(self, o): return self._bin(o, "left_shift")
    def __rshift__(self, o): return self._bin(o, "right_shift")
    def __lt__(self, o): return self._bin(o, "less", "bool")
    def __le__(self, o): return self._bin(o, "less_equal", "bool")
    def __gt__(self, o): return self._bin(o, "greater", "bool")
    def __ge__(self, o): return self._bin(o, "greater_equal", "bool")
    def __eq__(self, o): return self._bin(o, "equal", "bool")
    def __ne__(self, o): return self._bin(o, "not_equal", "bool")
    def __neg__(self): return array(_shape=self.shape, dtype=self.dtype, _src=self.src)
    def __invert__(self): return array(_shape=self.shape, dtype=self.dtype, _src=self.src)
    def __abs__(self): return array(_shape=self.shape, dtype=self.dtype, _src=self.src)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    # -- shape methods (the same as the functions of the same names)
    def reshape(self, *shape, stream=None):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (list, tuple))
                       else shape)

    def transpose(self, *axes, stream=None):
        if len(axes) == 1 and isinstance(axes[0], (list, tuple)):
            axes = axes[0]
        return transpose(self, list(axes) if axes else None)

    def swapaxes(self, a, b, stream=None):
        return swapaxes(self, a, b)

    def moveaxis(self, a, b, stream=None):
        return moveaxis(self, a, b)

    def flatten(self, start_axis=0, end_axis=-1, stream=None):
        return flatten(self, start_axis, end_axis)

    def squeeze(self, axis=None, stream=None):
        return squeeze(self, axis)

    def astype(self, dtype, stream=None):
        return array(_shape=self.shape, dtype=_dt(dtype), _src=self.src)

    def view(self, dtype, stream=None):
        return view(self, dtype)

    def split(self, indices_or_sections, axis=0, stream=None):
        return split(self, indices_or_sections, axis)

    def sum(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims, "float")
    def max(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims)
    def min(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims)
    def prod(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims)
    def any(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims, "bool")
    def all(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims, "bool")
    def argmax(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims, "index")
    def argmin(self, axis=None, keepdims=False, stream=None): return _reduce(self, axis, keepdims, "index")
    def exp(self, stream=None): return _unary(self)
    def log(self, stream=None): return _unary(self)
    def sqrt(self, stream=None): return _unary(self)
    def square(self, stream=None): return _unary(self)
    def abs(self, stream=None): return _unary(self)

    # -- indexing: integers, slices, None, Ellipsis and one integer-array index (numpy's rules)
    def __getitem__(self, idx):
        if not isinstance(idx, tuple):
            idx = (idx,)
        n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
        if n_real > self.ndim:
            raise ShapeError(f"Too many indices for array with {self.ndim} dimensions.")
        if sum(1 for i in idx if i is Ellipsis) > 1:
            raise ShapeError("An index can only have a single ellipsis")
        if Ellipsis in [i for i in idx if not isinstance(i, array)]:
            k = [j for j, i in enumerate(idx) if i is Ellipsis and not isinstance(i, array)][0]
            idx = idx[:k] + (slice(None),) * (self.ndim - n_real) + idx[k + 1:]
        else:
            idx = idx + (slice(None),) * (self.ndim - n_real)
        out, dim, adv, adv_pos = [], 0, None, None
        for i in idx:
            if i is None:
                out.append(1)
            elif isinstance(i, slice):
                out.append(len(range(*i.indices(self.shape[dim]))))
                dim += 1
            elif isinstance(i, int):
                if not -self.shape[dim] <= i < self.shape[dim]:
                    raise ShapeError(f"index {i} is out of bounds for axis {dim} "
                                     f"with size {self.shape[dim]}")
                dim += 1
            elif isinstance(i, array):
                if adv is not None:
                    raise NotImplementedError("shape-only stand-in: several array indices")
                adv, adv_pos = i.shape, len(out)
                dim += 1
            else:
                raise TypeError(f"unsupported index {i!r}")
        if adv is not None:
            out[adv_pos:adv_pos] = list(adv)
        return array(_shape=out, dtype=self.dtype, _src=self.src)

    def __setitem__(self, idx, value):
        self[idx]  # checks the index; the value is not kept (no data)


# -- constructors
def _shape_arg(shape):
    return (shape,) if isinstance(shape, int) else tuple(shape)


def zeros(shape, dtype=F32, stream=None):
    return array(_shape=_shape_arg(shape), dtype=_dt(dtype) or F32)


def ones(shape, dtype=F32, stream=None):
    return array(_shape=_shape_arg(shape), dtype=_dt(dtype) or F32)


def full(shape, vals, dtype=None, stream=None):
    vshape = vals.shape if isinstance(vals, array) else ()
    shape = _broadcast("full", _shape_arg(shape), vshape)
    base = vals.dtype if isinstance(vals, array) else _scalar_dtype(vals)
    return array(_shape=shape, dtype=_dt(dtype) or base, _src=_src(vals))


def zeros_like(a, stream=None):
    return array(_shape=a.shape, dtype=a.dtype)


ones_like = zeros_like


def arange(*args, dtype=None, stream=None, **kw):
    if "start" in kw or "stop" in kw:
        args = (kw.get("start", 0), kw["stop"], kw.get("step", 1))
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (tuple(args) + (1,))[:3]
    n = max(0, math.ceil((stop - start) / step))
    base = F32 if any(isinstance(v, float) for v in (start, stop, step)) else DTYPES["int32"]
    return array(_shape=(n,), dtype=_dt(dtype) or base)


def linspace(start, stop, num=50, dtype=F32, stream=None):
    return array(_shape=(num,), dtype=dtype)


class _Random(types.ModuleType):
    """mlx.core.random: only shapes and dtypes."""

    @staticmethod
    def uniform(low=0.0, high=1.0, shape=(), dtype=F32, key=None, stream=None):
        return array(_shape=_shape_arg(shape), dtype=dtype)

    @staticmethod
    def normal(shape=(), dtype=F32, loc=0.0, scale=1.0, key=None, stream=None):
        return array(_shape=_shape_arg(shape), dtype=dtype)

    @staticmethod
    def randint(low, high, shape=(), dtype=DTYPES["int32"], key=None, stream=None):
        return array(_shape=_shape_arg(shape), dtype=dtype)

    @staticmethod
    def seed(s):
        pass

    @staticmethod
    def key(s):
        return array(_shape=(2,), dtype=U32)


# -- shape functions
def reshape(a, shape, stream=None):
    shape = list(_shape_arg(shape))
    if shape.count(-1) > 1:
        raise ShapeError("[reshape] Reshape can only infer one dimension.")
    known = math.prod(d for d in shape if d != -1)
    if -1 in shape:
        if known == 0 or a.size % known:
            raise ShapeError(f"[reshape] Cannot infer the shape of an empty array or reshape "
                             f"{a.shape} into {tuple(shape)}.")
        shape[shape.index(-1)] = a.size // known
    if math.prod(shape) != a.size:
        raise ShapeError(f"[reshape] Cannot reshape array of size {a.size} into shape "
                         f"{tuple(shape)}.")
    return array(_shape=shape, dtype=a.dtype, _src=a.src)


def transpose(a, axes=None, stream=None):
    axes = list(range(a.ndim))[::-1] if axes is None else [_norm_axis(x, a.ndim, "transpose")
                                                           for x in axes]
    if sorted(axes) != list(range(a.ndim)):
        raise ShapeError(f"[transpose] Recived {len(axes)} axes for array with {a.ndim} dims.")
    return array(_shape=[a.shape[x] for x in axes], dtype=a.dtype, _src=a.src)


def swapaxes(a, axis1, axis2, stream=None):
    axes = list(range(a.ndim))
    i, j = _norm_axis(axis1, a.ndim, "swapaxes"), _norm_axis(axis2, a.ndim, "swapaxes")
    axes[i], axes[j] = axes[j], axes[i]
    return transpose(a, axes)


def moveaxis(a, source, destination, stream=None):
    axes = list(range(a.ndim))
    s = _norm_axis(source, a.ndim, "moveaxis")
    axes.pop(s)
    axes.insert(_norm_axis(destination, a.ndim, "moveaxis"), s)
    return transpose(a, axes)


def expand_dims(a, axis, stream=None):
    axes = [axis] if isinstance(axis, int) else list(axis)
    nd = a.ndim + len(axes)
    axes = sorted(_norm_axis(x, nd, "expand_dims") for x in axes)
    shape = list(a.shape)
    for x in axes:
        shape.insert(x, 1)
    return array(_shape=shape, dtype=a.dtype, _src=a.src)


def squeeze(a, axis=None, stream=None):
    if axis is None:
        axes = [i for i, d in enumerate(a.shape) if d == 1]
    else:
        axes = [_norm_axis(x, a.ndim, "squeeze") for x in ([axis] if isinstance(axis, int)
                                                          else axis)]
        for x in axes:
            if a.shape[x] != 1:
                raise ShapeError("[squeeze] Cannot squeeze axis with size != 1")
    return array(_shape=[d for i, d in enumerate(a.shape) if i not in axes], dtype=a.dtype,
                 _src=a.src)


def flatten(a, start_axis=0, end_axis=-1, stream=None):
    if a.ndim == 0:
        return reshape(a, (1,))
    s, e = _norm_axis(start_axis, a.ndim, "flatten"), _norm_axis(end_axis, a.ndim, "flatten")
    if s > e:
        raise ShapeError("[flatten] start_axis must be less than or equal to end_axis")
    shape = a.shape[:s] + (math.prod(a.shape[s:e + 1]),) + a.shape[e + 1:]
    return array(_shape=shape, dtype=a.dtype, _src=a.src)


def unflatten(a, axis, shape, stream=None):
    ax = _norm_axis(axis, a.ndim, "unflatten")
    return reshape(a, a.shape[:ax] + tuple(reshape(
        array(_shape=(a.shape[ax],), dtype=a.dtype), shape).shape) + a.shape[ax + 1:])


def broadcast_to(a, shape, stream=None):
    shape = tuple(shape)
    if _broadcast("broadcast_to", a.shape, shape) != shape:
        raise ShapeError(f"[broadcast_to] Cannot broadcast {a.shape} to {shape}")
    return array(_shape=shape, dtype=a.dtype, _src=a.src)


def stack(arrays, axis=0, stream=None):
    arrays = list(arrays)
    if not arrays:
        raise ShapeError("[stack] No arrays provided for stacking")
    if any(x.shape != arrays[0].shape for x in arrays):
        raise ShapeError("[stack] All arrays must have the same shape; got "
                         + ", ".join(str(x.shape) for x in arrays))
    out = expand_dims(arrays[0], axis)
    dt = arrays[0].dtype
    for x in arrays[1:]:
        dt = promote(dt, x.dtype)
    shape = list(out.shape)
    shape[_norm_axis(axis, arrays[0].ndim + 1, "stack")] = len(arrays)
    return array(_shape=shape, dtype=dt, _src=_src(*arrays))


def concatenate(arrays, axis=0, stream=None):
    arrays = list(arrays)
    if not arrays:
        raise ShapeError("[concatenate] No arrays provided for concatenation")
    nd = arrays[0].ndim
    ax = _norm_axis(axis, nd, "concatenate")
    for x in arrays:
        if x.ndim != nd or any(x.shape[i] != arrays[0].shape[i] for i in range(nd) if i != ax):
            raise ShapeError("[concatenate] All the input array dimensions must match exactly "
                             "except for the concatenation axis; got "
                             + ", ".join(str(y.shape) for y in arrays))
    shape = list(arrays[0].shape)
    shape[ax] = sum(x.shape[ax] for x in arrays)
    dt = arrays[0].dtype
    for x in arrays[1:]:
        dt = promote(dt, x.dtype)
    return array(_shape=shape, dtype=dt, _src=_src(*arrays))


def split(a, indices_or_sections, axis=0, stream=None):
    ax = _norm_axis(axis, a.ndim, "split")
    n = a.shape[ax]
    if isinstance(indices_or_sections, int):
        if n % indices_or_sections:
            raise ShapeError(f"[split] Array split does not result in sub arrays with equal size: "
                             f"{n} along axis {ax} into {indices_or_sections}")
        step = n // indices_or_sections
        bounds = list(range(0, n + 1, step)) if step else [0] * (indices_or_sections + 1)
    else:
        bounds = [0] + [min(max(i if i >= 0 else i + n, 0), n) for i in indices_or_sections] + [n]
    out = []
    for b, e in zip(bounds[:-1], bounds[1:]):
        shape = list(a.shape)
        shape[ax] = max(0, e - b)
        out.append(array(_shape=shape, dtype=a.dtype, _src=a.src))
    return out


def pad(a, pad_width, mode="constant", constant_values=0, stream=None):
    if isinstance(pad_width, int):
        pw = [(pad_width, pad_width)] * a.ndim
    elif len(pad_width) and isinstance(pad_width[0], int):
        pw = [tuple(pad_width) * (2 if len(pad_width) == 1 else 1)] * a.ndim
    else:
        pw = [tuple(p) for p in pad_width]
        if len(pw) == 1:
            pw = pw * a.ndim
    if len(pw) != a.ndim:
        raise ShapeError(f"[pad] Invalid number of padding sizes passed to pad with axes of "
                         f"size {a.ndim}")
    return array(_shape=[d + b + e for d, (b, e) in zip(a.shape, pw)], dtype=a.dtype, _src=a.src)


def contiguous(a, allow_col_major=False, stream=None):
    return array(_shape=a.shape, dtype=a.dtype, _src=a.src)


def view(a, dtype, stream=None):
    dtype = _dt(dtype)
    if a.dtype.size == dtype.size:
        return array(_shape=a.shape, dtype=dtype, _src=a.src)
    if a.ndim == 0 or (a.shape[-1] * a.dtype.size) % dtype.size:
        raise ShapeError(f"[view] Cannot view array of shape {a.shape} and type {a.dtype} "
                         f"as type {dtype}")
    return array(_shape=a.shape[:-1] + (a.shape[-1] * a.dtype.size // dtype.size,), dtype=dtype,
                 _src=a.src)


def astype(a, dtype, stream=None):
    return a.astype(dtype)


def where(cond, x, y, stream=None):
    shapes = [v.shape for v in (cond, x, y) if isinstance(v, array)]
    dts = [v.dtype for v in (x, y) if isinstance(v, array)]
    dt = dts[0] if dts else F32
    for d in dts[1:]:
        dt = promote(dt, d)
    return array(_shape=_broadcast("where", *shapes), dtype=dt, _src=_src(cond, x, y))


def _binary(op, result=None):
    def fn(a, b, stream=None):
        if isinstance(a, array):
            return a._bin(b, op, result)
        if isinstance(b, array):
            return b._bin(a, op, result)
        return array(_shape=(), dtype=promote(_scalar_dtype(a), _scalar_dtype(b)))
    fn.__name__ = op
    return fn


add, subtract, multiply, maximum, minimum = (_binary(n) for n in
                                             ("add", "subtract", "multiply", "maximum", "minimum"))
divide, power, logaddexp = _binary("divide", "float"), _binary("power"), _binary("logaddexp")
remainder, floor_divide = _binary("remainder"), _binary("floor_divide")
equal, not_equal, less, greater = (_binary(n, "bool") for n in
                                   ("equal", "not_equal", "less", "greater"))
less_equal, greater_equal = _binary("less_equal", "bool"), _binary("greater_equal", "bool")
logical_and, logical_or = _binary("logical_and", "bool"), _binary("logical_or", "bool")
bitwise_and, bitwise_or = _binary("bitwise_and"), _binary("bitwise_or")
left_shift, right_shift = _binary("left_shift"), _binary("right_shift")


def _unary(a, *args, stream=None, **kw):
    if not isinstance(a, array):
        a = array(a)
    return array(_shape=a.shape, dtype=a.dtype, _src=a.src)


(exp, log, log1p, expm1, sqrt, rsqrt, square, mx_abs, sin, cos, tanh, sigmoid, erf, floor, ceil,
 mx_round, negative, sign, logical_not, stop_gradient, softmax, cumsum, cumprod, sort, erfinv,
 isnan, isinf, nan_to_num) = (_unary,) * 28


def clip(a, a_min, a_max, stream=None):
    return _unary(a)


def _reduce(a, axis=None, keepdims=False, kind=None, stream=None):
    if axis is None:
        axes = list(range(a.ndim))
    else:
        axes = [_norm_axis(x, a.ndim, "reduce") for x in ([axis] if isinstance(axis, int)
                                                          else axis)]
    shape = [1 if i in axes else d for i, d in enumerate(a.shape) if keepdims or i not in axes]
    dt = {"bool": BOOL, "index": U32, "float": a.dtype if a.dtype.kind in "fc" else F32}.get(
        kind, a.dtype)
    return array(_shape=shape, dtype=dt, _src=a.src)


def mx_sum(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims)
def mean(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims, "float")
def mx_max(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims)
def mx_min(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims)
def prod(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims)
def argmax(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims, "index")
def argmin(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims, "index")
def logsumexp(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims)
def mx_any(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims, "bool")
def mx_all(a, axis=None, keepdims=False, stream=None): return _reduce(a, axis, keepdims, "bool")


def argsort(a, axis=-1, stream=None):
    return array(_shape=a.shape, dtype=U32, _src=a.src)


def argpartition(a, kth, axis=-1, stream=None):
    return array(_shape=a.shape, dtype=U32, _src=a.src)


def topk(a, k, axis=-1, stream=None):
    shape = list(a.shape)
    shape[_norm_axis(axis, a.ndim, "topk")] = k
    return array(_shape=shape, dtype=a.dtype, _src=a.src)


def take_along_axis(a, indices, axis=None, stream=None):
    return array(_shape=_broadcast("take_along_axis", a.shape, indices.shape), dtype=a.dtype,
                 _src=a.src)


def put_along_axis(a, indices, values, axis=None, stream=None):
    return _unary(a)


def take(a, indices, axis=None, stream=None):
    ishape = indices.shape if isinstance(indices, array) else ()
    if axis is None:
        return array(_shape=ishape, dtype=a.dtype, _src=a.src)
    ax = _norm_axis(axis, a.ndim, "take")
    return array(_shape=a.shape[:ax] + ishape + a.shape[ax + 1:], dtype=a.dtype, _src=a.src)


def matmul(a, b, stream=None):
    if a.ndim < 1 or b.ndim < 1:
        raise ShapeError("[matmul] Got 0 dimension input. Inputs must have at least one dimension.")
    sa, sb = (1,) + a.shape if a.ndim == 1 else a.shape, b.shape + (1,) if b.ndim == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise ShapeError(f"[matmul] Last dimension of first input with shape {a.shape} must match "
                         f"second to last dimension of second input with shape {b.shape}.")
    shape = _broadcast("matmul", sa[:-2], sb[:-2]) + (sa[-2], sb[-1])
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    return array(_shape=shape, dtype=promote(a.dtype, b.dtype), _src=_src(a, b))


# -- quantization (mlx/ops.cpp: quantize, dequantize, from_fp8)
QUANT_MODES = {"affine": (64, 4), "mxfp4": (32, 4), "nvfp4": (16, 4), "mxfp8": (32, 8)}


def _quant_params(mode, group_size, bits, op):
    if mode not in QUANT_MODES:
        raise ShapeError(f"[{op}] Invalid quantization mode '{mode}'.")
    dgs, dbits = QUANT_MODES[mode]
    return (dgs if group_size is None else group_size), (dbits if bits is None else bits)


def quantize(w, group_size=None, bits=None, mode="affine", global_scale=None, stream=None):
    gs, bits = _quant_params(mode, group_size, bits, "quantize")
    if w.dtype.kind != "f":
        raise ShapeError(f"[quantize] Only real floating types can be quantized but w has type "
                         f"{w.dtype}.")
    if w.ndim < 2:
        raise ShapeError(f"[quantize] The matrix to be quantized must have at least 2 dimension "
                         f"but it has only {w.ndim}.")
    if w.shape[-1] % gs:
        raise ShapeError(f"[quantize] The last dimension of the matrix needs to be divisible by "
                         f"the quantization group size {gs}. However the provided  matrix has "
                         f"shape {w.shape}")
    if mode == "affine":
        if gs not in (32, 64, 128):
            raise ShapeError(f"[quantize] The requested group size {gs} is not supported. The "
                             "supported group sizes are 32, 64, and 128.")
        if bits not in (2, 3, 4, 5, 6, 8):
            raise ShapeError(f"[quantize] The requested number of bits {bits} is not supported. "
                             "The supported bits are 2, 3, 4, 5, 6 and 8.")
    elif (gs, bits) != QUANT_MODES[mode]:
        raise ShapeError(f"[quantize] {mode} quantization requires group size "
                         f"{QUANT_MODES[mode][0]} and bits {QUANT_MODES[mode][1]}.")
    wq = array(_shape=w.shape[:-1] + (w.shape[-1] * bits // 32,), dtype=U32, _src=w.src)
    sshape = w.shape[:-1] + (w.shape[-1] // gs,)
    if mode == "affine":
        return [wq, array(_shape=sshape, dtype=w.dtype, _src=w.src),
                array(_shape=sshape, dtype=w.dtype, _src=w.src)]
    return [wq, array(_shape=sshape, dtype=DTYPES["uint8"], _src=w.src)]


def dequantize(w, scales, biases=None, group_size=None, bits=None, mode="affine",
               global_scale=None, dtype=None, stream=None):
    gs, bits = _quant_params(mode, group_size, bits, "dequantize")
    if w.dtype is not U32:
        raise ShapeError("[dequantize] The matrix should be given as a uint32")
    if w.ndim < 2:
        raise ShapeError(f"[dequantize] The matrix to be dequantized must have at least 2 "
                         f"dimension but it has only {w.ndim}.")
    if mode == "affine" and biases is None:
        raise ShapeError("[dequantize] Biases must be provided for affine quantization.")
    others = [scales] + ([biases] if biases is not None else [])
    if any(x.ndim != w.ndim or x.shape[:-1] != w.shape[:-1] for x in others):
        raise ShapeError("[dequantize] Shape of scales and biases does not match the matrix")
    out = w.shape[-1] * 32 // bits
    if out != scales.shape[-1] * gs:
        raise ShapeError(f"[dequantize] Shape of scales and biases does not match the matrix given "
                         f"the quantization parameters. Provided matrix of shape {w.shape} and "
                         f"scales/biases of shape {scales.shape} with group_size={gs} and "
                         f"bits={bits}.")
    dt = _dt(dtype) or (scales.dtype if mode == "affine" else DTYPES["bfloat16"])
    return array(_shape=w.shape[:-1] + (out,), dtype=dt, _src=_src(w, scales, biases))


def from_fp8(x, dtype=DTYPES["bfloat16"], stream=None):
    if x.dtype is not DTYPES["uint8"]:
        raise ShapeError("[from_fp8] Input must have type uint8 but got " + str(x.dtype))
    return array(_shape=x.shape, dtype=_dt(dtype), _src=x.src)


def to_fp8(x, stream=None):
    return array(_shape=x.shape, dtype=DTYPES["uint8"], _src=x.src)


def _qmm(x, w, scales, biases=None, transpose=True, group_size=None, bits=None, mode="affine",
         **kw):
    gs, bits = _quant_params(mode, group_size, bits, "quantized_matmul")
    out = w.shape[-2] if transpose else w.shape[-1] * 32 // bits
    return array(_shape=x.shape[:-1] + (out,), dtype=x.dtype, _src=x.src)


quantized_matmul = _qmm


def gather_qmm(x, w, scales, biases=None, lhs_indices=None, rhs_indices=None, transpose=True,
               group_size=None, bits=None, mode="affine", sorted_indices=False, stream=None):
    return _qmm(x, w, scales, biases, transpose, group_size, bits, mode)


def gather_mm(a, b, lhs_indices=None, rhs_indices=None, sorted_indices=False, stream=None):
    return array(_shape=a.shape[:-1] + (b.shape[-1],), dtype=a.dtype, _src=a.src)


# -- transforms and io
def mx_compile(fun=None, inputs=None, outputs=None, shapeless=False):
    """No tracing: the function itself (used as @mx.compile and partial(mx.compile, ...))."""
    if fun is None:
        return lambda f: f
    return fun


def mx_eval(*args):
    pass





def depends(inputs, dependencies):
    return inputs


class finfo:
    def __init__(self, dtype):
        self.dtype = dtype
        self.min, self.max = -65504.0, 65504.0  # values are never used for shapes


class iinfo(finfo):
    pass


# What load() gave for each file tensor: name -> (file, safetensors dtype, shape).
FILE_TENSORS = {}
DUPLICATES = []


def load(file, format=None, return_metadata=False, stream=None):
    """The arrays of a safetensors file, from its header alone; each carries its own name as src."""
    if not str(file).endswith(".safetensors"):
        raise ValueError(f"shape-only stand-in reads safetensors only, not {file}")
    header, meta = read_safetensors_header(str(file))
    out = {}
    for name, (st, shape) in header.items():
        if name in FILE_TENSORS:
            DUPLICATES.append((name, FILE_TENSORS[name][0], str(file)))
        FILE_TENSORS[name] = (str(file), st, shape)
        out[name] = array(_shape=shape, dtype=DTYPES[ST_DTYPES[st][0]], _src=(name,))
    return (out, meta) if return_metadata else out


def write_safetensors(path, tensors, metadata=None):
    """Writes a real safetensors file whose tensors' bytes are all zero: tensors maps name ->
    (safetensors dtype, shape). The layout (names, dtypes, shapes) is all the checker reads."""
    header, offset = {}, 0
    for name, (st, shape) in tensors.items():
        n = math.prod(shape) * ST_DTYPES[st][1]
        header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)


def save_safetensors(file, arrays, metadata=None):
    """mx.save_safetensors: the arrays' layout with zero bytes (see write_safetensors); lets the
    self test replay mlx-lm's own convert (save_model)."""
    write_safetensors(file, {k: (ST_OF_DTYPE[a.dtype.name], a.shape) for k, a in arrays.items()},
                      metadata)


def _missing(modname):
    """Attributes the stand-in does not model: a callable that says so when called (model files
    may name them at import time, e.g. in annotations or default arguments)."""
    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)

        class Missing:
            def __init__(self, *a, **k):
                raise NotImplementedError(f"{modname}.{name} is not modelled by the shape-only "
                                          "stand-in (tests/ref/mlxlm_check.py)")
        Missing.__name__ = name
        return Missing
    return getattr_


# ------------------------------------------------------------------------------------------------
# mlx.utils (the tree functions, as mlx/python/mlx/utils.py documents them)
# ------------------------------------------------------------------------------------------------

def tree_map(fn, tree, *rest, is_leaf=None):
    if is_leaf is not None and is_leaf(tree):
        return fn(tree, *rest)
    if isinstance(tree, (list, tuple)):
        sub = [tree_map(fn, c, *(r[i] for r in rest), is_leaf=is_leaf) for i, c in enumerate(tree)]
        return type(tree)(*sub) if hasattr(tree, "_fields") else type(tree)(sub)
    if isinstance(tree, dict):
        return {k: tree_map(fn, c, *(r[k] for r in rest), is_leaf=is_leaf) for k, c in tree.items()}
    return fn(tree, *rest)


def tree_map_with_path(fn, tree, *rest, is_leaf=None, path=None):
    if is_leaf is not None and is_leaf(tree):
        return fn(path, tree, *rest)
    prefix = f"{path}." if path else ""
    if isinstance(tree, (list, tuple)):
        sub = [tree_map_with_path(fn, c, *(r[i] for r in rest), is_leaf=is_leaf,
                                  path=f"{prefix}{i}") for i, c in enumerate(tree)]
        return type(tree)(*sub) if hasattr(tree, "_fields") else type(tree)(sub)
    if isinstance(tree, dict):
        return {k: tree_map_with_path(fn, c, *(r[k] for r in rest), is_leaf=is_leaf,
                                      path=f"{prefix}{k}") for k, c in tree.items()}
    return fn(path, tree, *rest)


def tree_flatten(tree, prefix="", is_leaf=None, destination=None):
    """[(dotted.name, leaf)] (or a dict with destination={}); the first prefix character is
    dropped, as in mlx."""
    if destination is None:
        destination = []
    add = destination.extend if isinstance(destination, list) else destination.update
    if is_leaf is not None and is_leaf(tree):
        add([(prefix[1:], tree)])
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            tree_flatten(item, f"{prefix}.{i}", is_leaf, destination)
    elif isinstance(tree, dict):
        for k, v in tree.items():
            tree_flatten(v, f"{prefix}.{k}", is_leaf, destination)
    else:
        add([(prefix[1:], tree)])
    return destination


def tree_unflatten(tree):
    """Rebuild nested dicts/lists from dotted names: a level whose keys are all integers becomes a
    list (gaps filled with {}), as mlx does."""
    items = list(tree.items()) if isinstance(tree, dict) else list(tree)
    if len(items) == 1 and items[0][0] == "":
        return items[0][1]
    children = {}
    for key, value in items:
        head, _, rest = key.partition(".")
        children.setdefault(head, []).append((rest, value))
    try:
        ints = {int(k): k for k in children}
        is_list = len(ints) == len(children)
    except ValueError:
        is_list = False
    if is_list:
        out = []
        for i, k in sorted(ints.items()):
            out.extend({} for _ in range(i - len(out)))
            out.append(tree_unflatten(children[k]))
        return out
    return {k: tree_unflatten(v) for k, v in children.items()}


def tree_reduce(fn, tree, initializer=None, is_leaf=None):
    if is_leaf is not None and is_leaf(tree):
        return tree if initializer is None else fn(initializer, tree)
    acc = initializer
    if isinstance(tree, (list, tuple)):
        for item in tree:
            acc = tree_reduce(fn, item, acc, is_leaf)
    elif isinstance(tree, dict):
        for item in tree.values():
            acc = tree_reduce(fn, item, acc, is_leaf)
    else:
        return tree if acc is None else fn(acc, tree)
    return acc


# ------------------------------------------------------------------------------------------------
# mlx.nn: Module as mlx's dict tree, the layers model files construct, quantize
# ------------------------------------------------------------------------------------------------

# Every strict load_weights call records what it found here (the checker reads the last one).
LOAD_LOG = []
# Every module nn.quantize replaced: (path, class name, group_size, bits, mode).
QUANT_LOG = []


class Module(dict):
    """A dict of its arrays, sub-modules and containers of them (list/dict/tuple); any other
    attribute is an ordinary Python attribute. Keys starting with "_" are not parameters."""

    def __init__(self):
        self._no_grad = set()
        self._training = True

    @property
    def training(self):
        return self._training

    @property
    def state(self):
        return self

    def __getattr__(self, key):
        value = self.get(key, None)
        if value is not None:
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __setattr__(self, key, val):
        if isinstance(val, (array, dict, list, tuple)):
            if key in self.__dict__ and key not in self:
                del self.__dict__[key]
            self[key] = val
        else:
            super().__setattr__(key, val)
            self.pop(key, None)

    def __delattr__(self, name):
        if self.get(name, None) is not None:
            del self[name]
        else:
            super().__delattr__(name)

    def __repr__(self):
        return f"{type(self).__name__}()"

    # -- traversal
    @staticmethod
    def is_module(value):
        return isinstance(value, Module)

    @staticmethod
    def valid_child_filter(module, key, value):
        return isinstance(value, (dict, list))

    @staticmethod
    def valid_parameter_filter(module, key, value):
        return isinstance(value, (dict, list, array)) and not key.startswith("_")

    @staticmethod
    def trainable_parameter_filter(module, key, value):
        return Module.valid_parameter_filter(module, key, value) and key not in module._no_grad

    def filter_and_map(self, filter_fn, map_fn=None, is_leaf_fn=None):
        map_fn = map_fn or (lambda x: x)
        is_leaf_fn = is_leaf_fn or (lambda m, k, v: not isinstance(v, (Module, dict, list)))
        return {k: _unwrap(self, k, v, filter_fn, map_fn, is_leaf_fn)
                for k, v in self.items() if filter_fn(self, k, v)}

    def parameters(self):
        return self.filter_and_map(self.valid_parameter_filter)

    def trainable_parameters(self):
        return self.filter_and_map(self.trainable_parameter_filter)

    def children(self):
        return self.filter_and_map(self.valid_child_filter,
                                   is_leaf_fn=lambda m, k, v: isinstance(v, Module))

    def leaf_modules(self):
        def is_leaf_module(m, k, v):
            return isinstance(v, Module) and len(tree_flatten(v.children())) == 0
        return self.filter_and_map(self.valid_child_filter, is_leaf_fn=is_leaf_module)

    def apply_to_modules(self, apply_fn):
        stack = [("", self)]
        while stack:
            prefix, mod = stack.pop()
            apply_fn(prefix, mod)
            prefix = "." + prefix if prefix else ""
            stack.extend(tree_flatten(mod.children(), prefix=prefix, is_leaf=self.is_module))
        return self

    def modules(self):
        out = []
        self.apply_to_modules(lambda k, m: out.append(m))
        return out

    def named_modules(self):
        out = []
        self.apply_to_modules(lambda k, m: out.append((k, m)))
        return out

    # -- updates
    def update(self, parameters, strict=True):
        def apply(dst, params):
            if isinstance(params, dict):
                for k in params:
                    if k in dst:
                        cur, new = dst[k], params[k]
                        if isinstance(cur, array):
                            if strict and not isinstance(new, array):
                                raise ValueError(f"Received invalid type: {type(new).__name__}.")
                            dst[k] = new
                        else:
                            apply(cur, new)
                    elif strict:
                        raise ValueError(f'Module does not have parameter named "{k}".')
            elif isinstance(params, list):
                for i, new in enumerate(params):
                    if i >= len(dst):
                        if strict:
                            raise ValueError(f"List index {i} is out of bounds for destination "
                                             f"of length {len(dst)}.")
                        continue
                    if isinstance(dst[i], array):
                        if strict and not isinstance(new, array):
                            raise ValueError(f"Received invalid type: {type(new).__name__}.")
                        dst[i] = new
                    else:
                        apply(dst[i], new)
            elif strict:
                raise ValueError(f"Received invalid type: {type(params).__name__}.")
        apply(self, parameters)
        return self

    def update_modules(self, modules, strict=True):
        def apply(dst, mods):
            if isinstance(mods, dict):
                items = [(k, mods[k]) for k in mods]
            elif isinstance(mods, list):
                items = list(enumerate(mods))
            else:
                if strict:
                    raise ValueError(f"Received invalid type: {type(mods).__name__}.")
                return
            for k, new in items:
                present = (k in dst) if isinstance(dst, dict) else (k < len(dst))
                if not present:
                    if strict:
                        raise ValueError(f'Module does not have sub-module named "{k}".')
                    continue
                cur = dst[k]
                if isinstance(cur, Module) and isinstance(new, Module):
                    dst[k] = new
                elif isinstance(cur, (dict, list)):
                    apply(cur, new)
                elif strict and new != {}:
                    raise ValueError(f"Received invalid type: {type(new).__name__}.")
        apply(self, modules)
        return self

    def apply(self, map_fn, filter_fn=None):
        self.update(self.filter_and_map(filter_fn or Module.valid_parameter_filter, map_fn))
        return self

    def load_weights(self, file_or_weights, strict=True):
        """mlx's strict load: unexpected names, then missing names, then per parameter its type
        and shape, raising the first as mlx does; every finding is also kept in LOAD_LOG."""
        weights = file_or_weights
        if isinstance(weights, str):
            weights = list(load(weights).items())
        if strict:
            new = dict(weights)
            cur = tree_flatten(self.parameters(), destination={})
            found = {
                "unexpected": sorted(new.keys() - cur.keys()),
                "missing": sorted(cur.keys() - new.keys()),
                "type": sorted(k for k in cur if k in new and not isinstance(new[k], array)),
                "shape": [(k, cur[k].shape, new[k].shape) for k in cur
                          if k in new and isinstance(new[k], array) and new[k].shape != cur[k].shape],
                "expected": {k: (v.shape, v.dtype) for k, v in cur.items()},
                "provided": new,
            }
            LOAD_LOG.append(found)
            if found["unexpected"]:
                raise ValueError(f"Received {len(found['unexpected'])} parameters not in model: \n"
                                 + ",\n".join(found["unexpected"]) + ".")
            if found["missing"]:
                raise ValueError(f"Missing {len(found['missing'])} parameters: \n"
                                 + ",\n".join(found["missing"]) + ".")
            for k, v in cur.items():
                if not isinstance(new[k], array):
                    raise ValueError(f"Expected mx.array but received {type(new[k])} for "
                                     f"parameter {k}")
                if new[k].shape != v.shape:
                    raise ValueError(f"Expected shape {v.shape} but received shape "
                                     f"{new[k].shape} for parameter {k}")
        if len(weights) != 0:
            self.update(tree_unflatten(list(weights)), strict=False)
        return self

    def save_weights(self, file):
        save_safetensors(file, dict(tree_flatten(self.parameters())))

    # -- flags
    def freeze(self, *, recurse=True, keys=None, strict=False):
        def impl(_, m):
            local = keys
            if local is None:
                local = [k for k, _ in tree_flatten(m.filter_and_map(
                    lambda mm, k, v: not isinstance(v, Module) and mm.valid_parameter_filter(mm, k, v)))]
            local = local if isinstance(local, list) else [local]
            m._no_grad.update(local)
        self.apply_to_modules(impl) if recurse else impl("", self)
        return self

    def unfreeze(self, *, recurse=True, keys=None, strict=False):
        def impl(_, m):
            if keys is None:
                m._no_grad.clear()
            else:
                m._no_grad.difference_update(keys if isinstance(keys, list) else [keys])
        self.apply_to_modules(impl) if recurse else impl("", self)
        return self

    def _set_training_mode(self, mode):
        self._training = mode

    def train(self, mode=True):
        self.apply_to_modules(lambda _, m: m._set_training_mode(mode))
        return self

    def eval(self):
        return self.train(False)

    def set_dtype(self, dtype, predicate=lambda d: issubdtype(d, CATEGORIES["floating"])):
        predicate = predicate or (lambda _: True)
        self.apply(lambda x: x.astype(dtype) if predicate(x.dtype) else x)


def _unwrap(model, key, value, filter_fn, map_fn, is_leaf_fn):
    if is_leaf_fn(model, key, value):
        return map_fn(value)
    if isinstance(value, Module):
        return {k: _unwrap(value, k, v, filter_fn, map_fn, is_leaf_fn)
                for k, v in value.items() if filter_fn(value, k, v)}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            tk = f"{key}.{k}"
            out[k] = _unwrap(model, tk, v, filter_fn, map_fn, is_leaf_fn) \
                if filter_fn(model, tk, v) else {}
        return out
    if isinstance(value, list):
        out = []
        for i, v in enumerate(value):
            tk = f"{key}.{i}"
            out.append(_unwrap(model, tk, v, filter_fn, map_fn, is_leaf_fn)
                       if filter_fn(model, tk, v) else {})
        return out
    raise RuntimeError("Unexpected leaf found while traversing the module")


class Linear(Module):
    def __init__(self, input_dims, output_dims, bias=True):
        super().__init__()
        self.weight = random.uniform(shape=(output_dims, input_dims))
        if bias:
            self.bias = random.uniform(shape=(output_dims,))

    def __call__(self, x):
        y = x @ self["weight"].T
        return y + self["bias"] if "bias" in self else y

    def to_quantized(self, group_size=None, bits=None, mode="affine", quantize_input=False):
        if quantize_input:
            raise NotImplementedError("shape-only stand-in: QQLinear (quantized activations)")
        return QuantizedLinear.from_linear(self, group_size, bits, mode)


class QuantizedLinear(Module):
    def __init__(self, input_dims, output_dims, bias=True, group_size=None, bits=None,
                 mode="affine"):
        super().__init__()
        self.group_size, self.bits = _quant_params(mode, group_size, bits, "QuantizedLinear")
        self.mode = mode
        self.weight, self.scales, *biases = quantize(
            random.uniform(shape=(output_dims, input_dims)), group_size, bits, mode=mode)
        self.biases = biases[0] if biases else None
        if bias:
            self.bias = zeros((output_dims,))
        self.freeze()

    def __call__(self, x):
        return quantized_matmul(x, self["weight"], self["scales"], self.get("biases"), True,
                                self.group_size, self.bits, self.mode)

    @classmethod
    def from_linear(cls, linear, group_size=None, bits=None, mode="affine"):
        out_dims, in_dims = linear.weight.shape
        ql = cls(in_dims, out_dims, False, group_size, bits, mode=mode)
        ql.weight, ql.scales, *biases = quantize(linear.weight, group_size, bits, mode=mode)
        ql.biases = biases[0] if biases else None
        if "bias" in linear:
            ql.bias = linear.bias
        return ql


class Embedding(Module):
    def __init__(self, num_embeddings, dims):
        super().__init__()
        self.weight = random.normal(shape=(num_embeddings, dims))

    def __call__(self, x):
        return self.weight[x]

    def as_linear(self, x):
        return x @ self.weight.T

    def to_quantized(self, group_size=None, bits=None, mode="affine", quantize_input=False):
        if quantize_input:
            raise ValueError("Quantized input is not supported.")
        return QuantizedEmbedding.from_embedding(self, group_size, bits, mode)


class QuantizedEmbedding(Module):
    def __init__(self, num_embeddings, dims, group_size=None, bits=None, mode="affine"):
        super().__init__()
        self.group_size, self.bits = _quant_params(mode, group_size, bits, "QuantizedEmbedding")
        self.mode = mode
        self.weight, self.scales, *biases = quantize(
            random.normal(shape=(num_embeddings, dims)), group_size, bits, mode=mode)
        self.biases = biases[0] if biases else None
        self.num_embeddings, self.dims = num_embeddings, dims
        self.freeze()

    def __call__(self, x):
        return array(_shape=x.shape + (self.dims,), dtype=self["scales"].dtype)

    def as_linear(self, x):
        return quantized_matmul(x, self["weight"], self["scales"], self.get("biases"), True,
                                self.group_size, self.bits, self.mode)

    @classmethod
    def from_embedding(cls, emb, group_size=None, bits=None, mode="affine"):
        n, dims = emb.weight.shape
        ql = cls(n, dims, group_size, bits, mode=mode)
        ql.weight, ql.scales, *biases = quantize(emb.weight, group_size, bits, mode=mode)
        ql.biases = biases[0] if biases else None
        return ql


class RMSNorm(Module):
    def __init__(self, dims, eps=1e-5):
        super().__init__()
        self.weight = ones((dims,))
        self.eps = eps

    def __call__(self, x):
        return _unary(x)


class LayerNorm(Module):
    def __init__(self, dims, eps=1e-5, affine=True, bias=True):
        super().__init__()
        if affine:
            self.weight = ones((dims,))
            if bias:
                self.bias = zeros((dims,))
        self.dims, self.eps = dims, eps

    def __call__(self, x):
        return _unary(x)


class GroupNorm(Module):
    def __init__(self, num_groups, dims, eps=1e-5, affine=True, pytorch_compatible=False):
        super().__init__()
        if affine:
            self.bias = zeros((dims,))
            self.weight = ones((dims,))

    def __call__(self, x):
        return _unary(x)


class RoPE(Module):
    def __init__(self, dims, traditional=False, base=10000, scale=1.0):
        super().__init__()
        self.dims, self.traditional, self.base, self.scale = dims, traditional, base, scale

    def __call__(self, x, offset=0):
        return _unary(x)


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def __call__(self, x):
        return x


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def __call__(self, x):
        return x


class Sequential(Module):
    def __init__(self, *modules):
        super().__init__()
        self.layers = list(modules)

    def __call__(self, x):
        for m in self.layers:
            x = m(x)
        return x


def _activation_class(name):
    """mlx's activation modules have no parameters; their arguments only select the formula."""
    class Act(Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def __call__(self, x, *args, **kwargs):
            return _unary(x)
    Act.__name__ = Act.__qualname__ = name
    return Act


ACTIVATION_CLASSES = ["GELU", "SiLU", "ReLU", "ReLU6", "ReLU2", "Sigmoid", "Tanh", "Softmax",
                      "Softplus", "Softsign", "Mish", "LeakyReLU", "ELU", "CELU", "SELU", "GLU",
                      "LogSigmoid", "LogSoftmax", "Hardswish", "HardTanh", "Step", "PReLU"]
ACTIVATION_FUNCTIONS = ["gelu", "gelu_approx", "gelu_fast_approx", "silu", "relu", "relu6",
                        "relu2", "sigmoid", "tanh", "softmax", "softplus", "softsign", "mish",
                        "leaky_relu", "elu", "celu", "selu", "glu", "log_sigmoid", "log_softmax",
                        "hardswish", "hard_tanh", "step", "prelu"]


def nn_quantize(model, group_size=None, bits=None, *, mode="affine", quantize_input=False,
                class_predicate=None):
    """mlx.nn.quantize: every leaf module the predicate selects is replaced by its to_quantized()
    (with the predicate's dict as arguments when it returns one); a selected module without
    to_quantized is an error, as in mlx."""
    class_predicate = class_predicate or (lambda _, m: hasattr(m, "to_quantized"))

    def maybe_quantize(path, m):
        params = class_predicate(path, m)
        if not params:
            return m
        if not hasattr(m, "to_quantized"):
            raise ValueError(f"Unable to quantize model of type {type(m)}")
        if isinstance(params, bool):
            kwargs = {"group_size": group_size, "bits": bits, "mode": mode}
            if quantize_input:
                kwargs["quantize_input"] = quantize_input
        elif isinstance(params, dict):
            kwargs = dict(params)
            if "quantize_input" in kwargs and not kwargs["quantize_input"]:
                kwargs.pop("quantize_input")
        else:
            raise ValueError("``class_predicate`` must return a bool or a dict of parameters to "
                             "pass to ``to_quantized``")
        q = m.to_quantized(**kwargs)
        QUANT_LOG.append((path, type(q).__name__, getattr(q, "group_size", None),
                          getattr(q, "bits", None), getattr(q, "mode", None)))
        return q

    leaves = tree_map_with_path(maybe_quantize, model.leaf_modules(), is_leaf=Module.is_module)
    model.update_modules(leaves)


# ------------------------------------------------------------------------------------------------
# Installing the stand-in as mlx and importing mlx-lm from its checkout
# ------------------------------------------------------------------------------------------------

def _module(name, attrs, missing=True):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    if missing:
        m.__getattr__ = _missing(name)
    sys.modules[name] = m
    return m


random = _Random("mlx.core.random")


def install_mlx():
    """Registers the stand-in as mlx, mlx.core, mlx.nn and mlx.utils in sys.modules (replacing a
    real mlx if one is installed: nothing here may read or compute weights)."""
    g = globals()
    core_names = [
        "array", "Dtype", "DtypeCategory", "issubdtype", "finfo", "iinfo", "zeros", "ones", "full",
        "zeros_like", "ones_like", "arange", "linspace", "reshape", "transpose", "swapaxes",
        "moveaxis", "expand_dims", "squeeze", "flatten", "unflatten", "broadcast_to", "stack",
        "concatenate", "split", "pad", "contiguous", "view", "astype", "where", "add", "subtract",
        "multiply", "divide", "power", "maximum", "minimum", "remainder", "floor_divide", "equal",
        "not_equal", "less", "greater", "less_equal", "greater_equal", "logical_and", "logical_or",
        "bitwise_and", "bitwise_or", "left_shift", "right_shift", "logaddexp", "exp", "log",
        "log1p", "expm1", "sqrt", "rsqrt", "square", "sin", "cos", "tanh", "sigmoid", "erf",
        "erfinv", "floor", "ceil", "negative", "sign", "logical_not", "stop_gradient", "softmax",
        "cumsum", "cumprod", "sort", "isnan", "isinf", "nan_to_num", "clip", "mean", "prod",
        "argmax", "argmin", "logsumexp", "argsort", "argpartition", "topk", "take_along_axis",
        "put_along_axis", "take", "matmul", "quantize", "dequantize", "from_fp8", "to_fp8",
        "quantized_matmul", "gather_qmm", "gather_mm", "depends", "load", "save_safetensors"]
    core = {n: g[n] for n in core_names}
    # mlx.core names that are Python builtins are defined here with an mx_ prefix
    for n in ("sum", "max", "min", "any", "all", "abs", "round", "compile", "eval"):
        core[n] = g["mx_" + n]
    core["async_eval"] = mx_eval
    core.update(DTYPES)
    core.update(CATEGORIES)
    core.update(pi=math.pi, inf=math.inf, nan=math.nan, e=math.e, random=random)

    class Group:
        def rank(self):
            return 0

        def size(self):
            return 1

    distributed = _module("mlx.core.distributed", {"Group": Group, "init": lambda *a, **k: Group(),
                                                   "is_available": lambda: False})
    fast = _module("mlx.core.fast", {
        "rms_norm": lambda x, *a, **k: _unary(x), "layer_norm": lambda x, *a, **k: _unary(x),
        "rope": lambda x, *a, **k: _unary(x),
        "scaled_dot_product_attention": lambda q, k, v, **kw: array(
            _shape=q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)})
    core.update(distributed=distributed, fast=fast)
    sys.modules["mlx.core.random"] = random
    random.__getattr__ = _missing("mlx.core.random")
    mx = _module("mlx.core", core)

    utils = _module("mlx.utils", {n: g[n] for n in (
        "tree_map", "tree_map_with_path", "tree_flatten", "tree_unflatten", "tree_reduce")})

    nn_names = {"Module": Module, "Linear": Linear, "QuantizedLinear": QuantizedLinear,
                "Embedding": Embedding, "QuantizedEmbedding": QuantizedEmbedding,
                "RMSNorm": RMSNorm, "LayerNorm": LayerNorm, "GroupNorm": GroupNorm, "RoPE": RoPE,
                "Identity": Identity, "Dropout": Dropout, "Sequential": Sequential,
                "quantize": nn_quantize}
    for n in ACTIVATION_CLASSES:
        nn_names[n] = _activation_class(n)
    for n in ACTIVATION_FUNCTIONS:
        nn_names[n] = _unary

    def _not_modelled(*a, **k):
        raise NotImplementedError("shape-only stand-in: distributed sharding is not modelled")
    layers_distributed = _module("mlx.nn.layers.distributed", {
        "shard_linear": _not_modelled, "shard_inplace": _not_modelled,
        "sum_gradients": _not_modelled})
    layers_base = _module("mlx.nn.layers.base", {"Module": Module})
    layers_quantized = _module("mlx.nn.layers.quantized", {
        "QuantizedLinear": QuantizedLinear, "QuantizedEmbedding": QuantizedEmbedding,
        "quantize": nn_quantize})
    layers = _module("mlx.nn.layers", dict(nn_names, distributed=layers_distributed,
                                           base=layers_base, quantized=layers_quantized))
    layers.__path__ = []
    nn = _module("mlx.nn", dict(nn_names, layers=layers))
    nn.__path__ = []
    pkg = _module("mlx", {"core": mx, "nn": nn, "utils": utils}, missing=False)
    pkg.__path__ = []
    mx.__path__ = []
    return mx, nn


def use_mlx_python(mlx_python):
    """Replaces the stand-in's mlx.nn and mlx.utils by mlx's own Python sources (mlx_python: the
    folder holding mlx/nn/ and mlx/utils.py, i.e. python/ of an mlx checkout), keeping the
    stand-in's mlx.core. Used to check the stand-in's Module, load_weights and quantize against
    mlx's: the verdicts must agree (mlx's load_weights stops at its first finding, so the
    report then lists only what its error message says)."""
    src = os.path.join(mlx_python, "mlx")
    if not os.path.isfile(os.path.join(src, "nn", "layers", "base.py")):
        print(f"mlxlm_check: {mlx_python} has no mlx/nn/layers/base.py", file=sys.stderr)
        raise SystemExit(2)
    for name in [n for n in sys.modules if n == "mlx.utils" or n.startswith("mlx.nn")]:
        del sys.modules[name]
    sys.modules["mlx"].__path__ = [src]
    nn = importlib.import_module("mlx.nn")
    sys.modules["mlx"].nn = nn
    sys.modules["mlx"].utils = importlib.import_module("mlx.utils")


def import_mlx_lm(checkout, mlx_python=None):
    """Imports mlx_lm.utils from a checkout (the folder holding mlx_lm/). The package __init__
    (convert, generate: transformers) is skipped; huggingface_hub and transformers, which
    mlx_lm.utils imports for downloads and tokenizers only, get empty stand-ins when absent.
    mlx_python: use mlx's own nn and utils from there (see use_mlx_python)."""
    pkg_dir = os.path.join(checkout, "mlx_lm")
    if not os.path.isfile(os.path.join(pkg_dir, "models", "base.py")):
        print(f"mlxlm_check: {checkout} is not an mlx-lm checkout (no mlx_lm/models/base.py)",
              file=sys.stderr)
        raise SystemExit(2)
    install_mlx()
    if mlx_python:
        use_mlx_python(mlx_python)
    for name in [n for n in sys.modules if n == "mlx_lm" or n.startswith("mlx_lm.")]:
        del sys.modules[name]
    pkg = types.ModuleType("mlx_lm")
    pkg.__path__ = [pkg_dir]
    pkg.__version__ = "checkout"
    sys.modules["mlx_lm"] = pkg
    class Inert(type):
        """A class whose every class attribute is a do-nothing function (tokenizer_utils calls
        AutoTokenizer.register at import)."""
        def __getattr__(cls, name):
            return lambda *a, **k: None
    for name, attrs in (("huggingface_hub", ["snapshot_download"]),
                        ("transformers", ["AutoTokenizer", "PreTrainedTokenizerFast"])):
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            _module(name, {a: Inert(a, (), {}) for a in attrs})
    return importlib.import_module("mlx_lm.utils")


# ------------------------------------------------------------------------------------------------
# Config keys: transformers 5 spells some keys differently from what mlx-lm's ModelArgs read
# ------------------------------------------------------------------------------------------------

def older_spelling(c):
    """Keys of config level c in the spelling of the published checkpoints (older transformers),
    derived from transformers 5's: rope_parameters -> rope_theta / rope_scaling /
    partial_rotary_factor (gemma3: per layer type -> rope_theta, rope_local_base_freq),
    num_local_experts -> num_experts, text_config.vocab_size -> vocab_size, phi3's rope_scaling
    "type". Only keys c lacks are returned; whether mlx-lm reads them is decided by the caller."""
    out = {}
    rp = c.get("rope_parameters")
    if isinstance(rp, dict):
        if isinstance(rp.get("full_attention"), dict):  # gemma3: one set per layer type
            full, local = rp["full_attention"], rp.get("sliding_attention") or {}
            out["rope_theta"] = full.get("rope_theta")
            if "rope_theta" in local:
                out["rope_local_base_freq"] = local["rope_theta"]
            rp = full
        elif "rope_theta" in rp:
            out["rope_theta"] = rp["rope_theta"]
        if rp.get("rope_type", "default") != "default":
            scaling = {k: v for k, v in rp.items()
                       if k not in ("rope_theta", "partial_rotary_factor")}
            scaling.setdefault("type", rp["rope_type"])
            out["rope_scaling"] = scaling
        else:
            out["rope_scaling"] = None
        if "partial_rotary_factor" in rp:
            out["partial_rotary_factor"] = rp["partial_rotary_factor"]
    elif "rope_scaling" not in c:
        out["rope_scaling"] = None  # transformers' default: no scaling
    if "num_local_experts" in c:
        out["num_experts"] = c["num_local_experts"]
    if isinstance(c.get("text_config"), dict) and "vocab_size" in c["text_config"]:
        out["vocab_size"] = c["text_config"]["vocab_size"]
    return {k: v for k, v in out.items() if k not in c}


def _args_fields(cls):
    import dataclasses
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: (f.default if f.default is not dataclasses.MISSING else
                     "<required>" if f.default_factory is dataclasses.MISSING else "<factory>")
            for f in dataclasses.fields(cls)}


def config_keys(cfg, utils):
    """What mlx-lm's ModelArgs (and, for wrappers, the text model's args) would miss in cfg:
    [{level, key, value (in the older spelling), derived (whether the config gives a value),
    default, kind}], kind "required" (no default: construction fails), "default" (read with a
    default that differs from what the config means: the model computes something else; check()
    turns it into "load" when that default also makes the load fail). Also the config overrides
    that add the older spellings: {key: value} for load_model(model_config=...)."""
    try:
        model_cls, args_cls = utils._get_classes(config=cfg)
    except Exception:
        return [], {}
    mod = sys.modules.get(model_cls.__module__)
    levels = [("", cfg, args_cls)]
    tc = cfg.get("text_config")
    if isinstance(tc, dict):
        text_args = getattr(mod, "TextArgs", None)
        sub = getattr(mod, str(tc.get("model_type")), None)
        if text_args is None and isinstance(sub, types.ModuleType):
            text_args = getattr(sub, "ModelArgs", None)
        if text_args is not None:
            levels.append(("text_config.", tc, text_args))
    found, overrides = [], {}
    for prefix, c, cls in levels:
        fields = _args_fields(cls)
        older = older_spelling(c)
        added = {}
        for key, default in fields.items():
            if key in c:
                continue
            if key in older:
                value = older[key]
                if default == "<required>" or value != default:
                    found.append({"level": prefix, "key": key, "value": value, "derived": True,
                                  "default": default,
                                  "kind": "required" if default == "<required>" else "default"})
                    added[key] = value
            elif default == "<required>" and not (prefix == "" and key in ("text_config",)):
                found.append({"level": prefix, "key": key, "value": None, "derived": False,
                              "default": default, "kind": "required"})
        if added:
            if prefix:
                overrides["text_config"] = dict(c, **added)
            else:
                overrides.update(added)
    return found, overrides


# ------------------------------------------------------------------------------------------------
# The check
# ------------------------------------------------------------------------------------------------

def _stage(exc):
    """Where load_model failed, from the functions on the traceback (innermost known one)."""
    import traceback
    names = [f.name for f in traceback.extract_tb(exc.__traceback__)]
    for stage, funcs in (("load_weights", ("load_weights",)), ("sanitize", ("sanitize",)),
                         ("quantize", ("_quantize", "quantize", "nn_quantize")),
                         ("reading the files", ("load", "read_safetensors_header")),
                         ("building the model from config.json", ("from_dict", "__init__",
                                                                  "__post_init__", "_get_classes")),
                         ("reading config.json", ("load_config",))):
        if any(n in funcs for n in names[1:]):
            return stage
    return "load_model"


def _attempt(model_dir, utils, model_config=None):
    """One mlx-lm load_model(model_dir, strict=True, model_config=...) on the stand-in."""
    from pathlib import Path
    del LOAD_LOG[:], QUANT_LOG[:], DUPLICATES[:]
    FILE_TENSORS.clear()
    rep = {"ok": False, "error": None, "stage": None, "unexpected": [], "missing": [],
           "shape": [], "dtype": [], "quantized": {}, "params": {}, "dropped": []}
    model = None
    try:
        model, _ = utils.load_model(Path(model_dir), lazy=True, strict=True,
                                    model_config=model_config)
    except Exception as e:
        rep["error"] = f"{type(e).__name__}: {e}"
        rep["stage"] = _stage(e)
    rep["quantized"] = {p: {"class": c, "group_size": gs, "bits": b, "mode": m}
                        for p, c, gs, b, m in QUANT_LOG}
    if LOAD_LOG:
        found = LOAD_LOG[-1]
        prov = found["provided"]
        rep["unexpected"] = [{"name": k, "shape": list(prov[k].shape), "from": list(prov[k].src)}
                             if isinstance(prov[k], array) else {"name": k, "shape": None,
                                                                 "from": []}
                             for k in found["unexpected"]]
        rep["missing"] = [{"name": k, "shape": list(found["expected"][k][0])}
                          for k in found["missing"]]
        rep["shape"] = [{"name": k, "expected": list(e), "got": list(g),
                         "from": list(prov[k].src)} for k, e, g in found["shape"]]
        for k, (shape, dt) in sorted(found["expected"].items()):
            got = prov.get(k)
            if isinstance(got, array):
                rep["params"][k] = {"shape": list(got.shape), "dtype": got.dtype.name,
                                    "from": list(got.src)}
                # a parameter built floating (norms, float weights, biases) must stay floating
                if dt.kind == "f" and got.dtype.kind != "f":
                    rep["dtype"].append({"name": k, "expected": "floating", "got": got.dtype.name})
        used = {s for p in prov.values() if isinstance(p, array) for s in p.src}
        rep["dropped"] = sorted(set(FILE_TENSORS) - used)
    if model is not None:
        # mlx's quantized kernels (validate_quantized_input in mlx/ops.cpp): the packed weight
        # uint32, scales and biases floating with one shape
        for path, m in model.named_modules():
            if "scales" not in m or not hasattr(m, "bits") or "weight" not in m:
                continue
            w, sc, bi = m["weight"], m["scales"], m.get("biases")
            if w.dtype is not U32:
                rep["dtype"].append({"name": f"{path}.weight", "expected": "uint32",
                                     "got": w.dtype.name})
            for nm, a in (("scales", sc), ("biases", bi)):
                if a is not None and getattr(m, "mode", "affine") == "affine" and a.dtype.kind != "f":
                    rep["dtype"].append({"name": f"{path}.{nm}", "expected": "floating",
                                         "got": a.dtype.name})
    rep["ok"] = model is not None and not rep["dtype"]
    if model is not None and rep["dtype"]:
        rep["error"] = ("the strict load succeeds, but mlx's kernels refuse these arrays at the "
                        "first forward: " + ", ".join(d["name"] for d in rep["dtype"]))
        rep["stage"] = "dtypes"
    return rep


def _overrides(cfg_entries, model_dir):
    """load_model(model_config=...) for some config_keys entries (text_config ones merged into the
    checkpoint's own text_config)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    out = {}
    for c in cfg_entries:
        if c["level"]:
            out.setdefault("text_config", dict(cfg.get("text_config") or {}))[c["key"]] = c["value"]
        else:
            out[c["key"]] = c["value"]
    return out


def _needed_for_load(model_dir, utils, entries):
    """Which keys with a default the load also needs (gemma3: vocab_size, whose default 262208
    gives the embedding another shape): kind "load" for each whose addition, with the required
    ones, makes the load succeed; all of them when none does alone."""
    required = [c for c in entries if c["kind"] == "required"]
    optional = [c for c in entries if c["kind"] == "default"]
    if not optional or _attempt(model_dir, utils, _overrides(required, model_dir))["ok"]:
        return
    helped = [c for c in optional
              if _attempt(model_dir, utils, _overrides(required + [c], model_dir))["ok"]]
    for c in helped or optional:
        c["kind"] = "load"


def check(model_dir, mlx_lm_utils):
    """Runs mlx-lm's load_model(model_dir, strict=True) on the stand-in. Returns a report dict:
    ok; model_type; module (the mlx-lm model file used); error and stage (the exception mlx-lm
    raises and where); unexpected / missing / shape (every finding of the strict load, with the
    file tensors each provided parameter was built from); dtype (arrays mlx's kernels refuse);
    quantized (module -> class, bits, group_size, mode); params (model parameter -> shape, dtype,
    file tensors); dropped (file tensors sanitize() removed); files (file tensor -> file, dtype,
    shape); config (keys mlx-lm's ModelArgs lack, see config_keys); with_config (when keys are
    missing: the same load with the older spellings added, i.e. what the weights alone give);
    warnings."""
    from pathlib import Path
    rep = {"dir": str(model_dir), "model_type": None, "module": None}
    cfg = None
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        mt = cfg.get("model_type")
        rep["model_type"] = mt
        if isinstance(mt, str):
            rep["module"] = "mlx_lm.models." + mlx_lm_utils.MODEL_REMAPPING.get(mt, mt)
    except Exception:
        pass  # load_model raises the same, with mlx-lm's message
    rep.update(_attempt(model_dir, mlx_lm_utils))
    rep["files"] = {k: {"file": os.path.basename(f), "dtype": st, "shape": list(s)}
                    for k, (f, st, s) in sorted(FILE_TENSORS.items())}
    rep["warnings"] = [f"{n} is in both {os.path.basename(a)} and {os.path.basename(b)} (mlx-lm "
                       "keeps whichever it reads last)" for n, a, b in DUPLICATES]
    others = sorted(p.name for p in Path(model_dir).glob("*.safetensors")
                    if not p.name.startswith("model"))
    if others:
        rep["warnings"].append("mlx-lm reads model*.safetensors only; ignored: " + ", ".join(others))
    rep["config"], overrides = config_keys(cfg, mlx_lm_utils) if isinstance(cfg, dict) \
        else ([], {})
    rep["with_config"] = None
    if overrides:
        sub = _attempt(model_dir, mlx_lm_utils, model_config=overrides)
        if sub["ok"] and not rep["ok"]:
            _needed_for_load(model_dir, mlx_lm_utils, rep["config"])
        rep["with_config"] = {"added": overrides, **{k: sub[k] for k in (
            "ok", "error", "stage", "unexpected", "missing", "shape", "dtype", "quantized",
            "params", "dropped")}}
    return rep


def _findings(lines, r):
    for u in r["unexpected"]:
        via = f"  (from {', '.join(u['from'])})" if u["from"] and u["from"] != [u["name"]] else ""
        lines.append(f"  unexpected {u['name']} {tuple(u['shape'] or ())}{via}")
    for m in r["missing"]:
        lines.append(f"  missing    {m['name']} {tuple(m['shape'])}")
    for s in r["shape"]:
        lines.append(f"  shape      {s['name']}: expected {tuple(s['expected'])}, got "
                     f"{tuple(s['got'])} (from {', '.join(s['from'])})")
    for d in r["dtype"]:
        lines.append(f"  dtype      {d['name']}: expected {d['expected']}, got {d['got']}")


def format_report(rep, verbose=False):
    lines = [f"{'OK' if rep['ok'] else 'FAIL'} {rep['dir']}: model_type {rep['model_type']} -> "
             f"{rep['module']}"]
    if rep["error"]:
        lines.append(f"  mlx-lm: {rep['error'].splitlines()[0]} [{rep['stage']}]")
    _findings(lines, rep)
    for c in rep["config"]:
        what = {"required": f"{c['level']}{c['key']} is required by mlx-lm's ModelArgs and absent",
                "load": f"{c['level']}{c['key']} is absent: mlx-lm's default {c['default']!r} "
                        "makes the load fail",
                "default": f"{c['level']}{c['key']} is absent: mlx-lm uses its default "
                           f"{c['default']!r}"}[c["kind"]]
        src = f"; the config means {json.dumps(c['value'])}" if c["derived"] else ""
        lines.append(f"  config     {what}{src}")
    wc = rep.get("with_config")
    if wc:
        keys = ", ".join(f"{k}" for k in wc["added"])
        lines.append(f"  with {keys} written in the older spelling: "
                     + ("the load succeeds" if wc["ok"] else
                        f"{(wc['error'] or '').splitlines()[0]} [{wc['stage']}]"))
        if not wc["ok"]:
            sub = []
            _findings(sub, wc)
            lines.extend("  " + x for x in sub)
    for w in rep["warnings"]:
        lines.append(f"  warning    {w}")
    if verbose:
        for p, q in rep["quantized"].items():
            lines.append(f"  quantized  {p}: {q['class']} bits {q['bits']} group {q['group_size']}")
        for d in rep["dropped"]:
            lines.append(f"  dropped    {d} (sanitize)")
    if rep["ok"]:
        lines.append(f"  {len(rep['params'])} parameters loaded from {len(rep['files'])} file "
                     f"tensors, {len(rep['quantized'])} modules quantized, "
                     f"{len(rep['dropped'])} file tensors dropped by sanitize()")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mlx-lm", required=True, help="mlx-lm checkout (the folder holding mlx_lm/)")
    ap.add_argument("--mlx", metavar="MLX_PYTHON", help="use mlx's own nn and utils from this "
                    "folder (python/ of an mlx checkout) instead of the stand-in's")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also list quantized modules and tensors sanitize() drops")
    ap.add_argument("checkpoint", nargs="+", help="MLX checkpoint directory (config.json + "
                    "model*.safetensors)")
    args = ap.parse_args(argv)
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    utils = import_mlx_lm(args.mlx_lm, args.mlx)
    reports = [check(d, utils) for d in args.checkpoint]
    if args.json:
        out = reports[0] if len(reports) == 1 else reports
        print(json.dumps(out, indent=1))
    else:
        for r in reports:
            print(format_report(r, args.verbose))
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
