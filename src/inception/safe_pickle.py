"""Loading pickles of numpy arrays (CIFAR's python batches, Paddle's ``.pdparams``) from files
nobody vouches for, without running code and without unbounded memory.

:func:`load_numpy_pickle` is the one unpickler of the project:

* globals come from an exact ``(module, name)`` allowlist, checked before anything is imported
  (a prefix rule such as "any ``numpy.*``" would import ``numpy.f2py.__main__``, whose import
  runs f2py's command line);
* no object dtype: ``numpy.dtype`` and the array builders refuse it, so an array cannot carry
  arbitrary Python objects nor ask numpy to allocate one pointer per declared element;
* every array's declared size counts against the file's own size (an honest pickle stores its
  array bytes in the file), so a 1 kB file cannot ask for hundreds of GB.

Each refusal is an :class:`UnsafePickleError` whose message says what was refused; callers add
the file's name and turn it into their one-line error.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from typing import BinaryIO

import numpy as np

__all__ = ["NUMPY_GLOBALS", "MalformedPickleError", "UnsafePickleError", "load_numpy_pickle"]

# What a pickle of numeric numpy arrays needs, in numpy 1.x and 2.x spellings, for protocols 0-5
# (`_frombuffer` is protocol 5's out-of-band-capable form; `_codecs.encode` is how Python 3
# pickles bytes at protocols 0-2, and `bytes()` how it pickles empty bytes there: only that
# empty call is let through, never `bytes(n)`).
NUMPY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
})

# Slack over the file size for arrays' declared bytes: headers of tiny arrays, 0-d scalars.
_SLACK_BYTES = 1 << 20


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks for something a numeric-array pickle never needs."""


class MalformedPickleError(pickle.UnpicklingError):
    """Bytes that are no valid pickle: unknown opcodes, or lengths beyond the data."""


def _checked_dtype(dt) -> np.dtype:
    if dt.hasobject:
        raise UnsafePickleError("an array of Python objects (object dtype); only numeric arrays are read")
    return dt


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, shape, dtype: np.dtype) -> None:
        try:
            dims = [int(d) for d in shape]
        except (TypeError, ValueError):
            raise UnsafePickleError(f"an array with a malformed shape {shape!r}") from None
        if any(d < 0 for d in dims):
            raise UnsafePickleError(f"an array with a negative dimension {tuple(dims)}")
        self.used += math.prod(dims) * dtype.itemsize
        if self.used > self.limit:
            raise UnsafePickleError(f"arrays of {self.used:,} bytes in all (an array of shape {tuple(dims)} "
                                    f"{dtype}), more than the file itself holds ({self.limit - _SLACK_BYTES:,} "
                                    "bytes): a damaged or hostile file")


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: BinaryIO, *, allowed: frozenset, budget: _Budget, encoding: str) -> None:
        super().__init__(f, encoding=encoding)
        self.allowed, self.budget = allowed, budget

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:          # before any import
            raise UnsafePickleError(f"the global {module}.{name}, which a pickle of numeric arrays never needs "
                                    "(a malicious or foreign pickle)")
        if name == "bytes":
            def empty_bytes(*args):
                if args:
                    raise UnsafePickleError(f"bytes{args!r}: only bytes() of nothing is allowed")
                return b""
            return empty_bytes
        if name == "dtype":
            return lambda *args: _checked_dtype(np.dtype(*args))
        if name == "_reconstruct":
            budget = self.budget

            def reconstruct(cls, shape, dtype):
                if cls is not np.ndarray:
                    raise UnsafePickleError(f"an array of class {getattr(cls, '__name__', cls)!r}")
                array = _GuardedArray(shape, _checked_dtype(np.dtype(dtype)))
                array._budget = budget
                return array
            return reconstruct
        if name == "_frombuffer":
            budget, frombuffer = self.budget, super().find_class(module, name)

            def guarded_frombuffer(buf, dtype, shape, order):
                budget.take(shape, _checked_dtype(np.dtype(dtype)))
                return frombuffer(buf, dtype, shape, order)
            return guarded_frombuffer
        if name == "scalar":
            scalar = super().find_class(module, name)
            return lambda dtype, *args: scalar(_checked_dtype(np.dtype(dtype)), *args)
        return super().find_class(module, name)


class _GuardedArray(np.ndarray):
    """What ``_reconstruct`` builds: its ``__setstate__`` (the pickle's BUILD step, which sizes
    the array) checks the dtype and the declared size before numpy allocates anything."""

    _budget: _Budget | None = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("a malformed array state")
        shape, dtype = state[-4], state[-3]
        if not isinstance(dtype, np.dtype):
            raise UnsafePickleError("a malformed array state (no dtype)")
        _checked_dtype(dtype)
        if self._budget is not None:
            self._budget.take(shape, dtype)
        super().__setstate__(state)


def _plain(obj, depth: int = 0):
    """``obj`` with every guarded array turned back into a plain ndarray (dicts, lists and
    tuples, a few levels deep: what the readers' files hold)."""
    if isinstance(obj, _GuardedArray):
        return obj.view(np.ndarray)
    if depth > 4:
        return obj
    if isinstance(obj, dict):
        return type(obj)((k, _plain(v, depth + 1)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v, depth + 1) for v in obj)
    return obj


def load_numpy_pickle(data: bytes, *, extra_globals=(), encoding: str = "bytes"):
    """Unpickle ``data`` allowing only :data:`NUMPY_GLOBALS` plus ``extra_globals``
    (``(module, name)`` pairs), numeric dtypes, and arrays whose declared bytes fit in ``data``.
    Raises :class:`UnsafePickleError` for a refused pickle, :class:`MalformedPickleError` for
    bytes that are no pickle (a length beyond the data, before anything is allocated), and
    ``pickle.UnpicklingError``,
    ``EOFError``, ``ValueError`` and the like for a broken one."""
    try:   # every declared length checked against the bytes there, before anything is allocated
        for _ in pickletools.genops(data):
            pass
    except ValueError as e:
        raise MalformedPickleError(f"a malformed pickle ({e})") from None
    allowed = NUMPY_GLOBALS | frozenset(extra_globals)
    budget = _Budget(len(data) + _SLACK_BYTES)
    try:
        obj = _Unpickler(io.BytesIO(data), allowed=allowed, budget=budget, encoding=encoding).load()
    except RecursionError:
        raise UnsafePickleError("nesting too deep for a pickle of arrays") from None
    except MemoryError:
        raise UnsafePickleError("more memory than this machine has (a damaged or hostile file)") from None
    return _plain(obj)
