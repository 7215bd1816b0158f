"""The one restricted unpickler (CIFAR batches, Paddle .pdparams): exact allowlist checked
before any import, no object dtype, declared sizes bounded by the file."""

import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from inception.safe_pickle import MalformedPickleError, UnsafePickleError, load_numpy_pickle


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numeric_arrays_and_scalars_round_trip(protocol):
    obj = {b"data": np.arange(24, dtype=np.uint8).reshape(2, 12), b"labels": [1, 2],
           b"f": np.linspace(0, 1, 5, dtype=np.float32), b"s": np.float64(2.5), b"e": np.zeros((0, 3), np.int16)}
    out = load_numpy_pickle(pickle.dumps(obj, protocol=protocol))
    assert set(out) == set(obj)
    for k in (b"data", b"f", b"e"):
        assert type(out[k]) is np.ndarray and out[k].dtype == obj[k].dtype
        np.testing.assert_array_equal(out[k], obj[k])
    assert out[b"s"] == 2.5 and out[b"labels"] == [1, 2]


def _global(module: str, name: str) -> bytes:
    """A protocol-2 pickle that calls module.name() with no arguments."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."


def test_names_are_checked_before_any_import():
    # numpy.f2py.__main__ runs f2py's command line when imported: a prefix rule ("numpy.*") imported it.
    code = ("import sys; from inception.safe_pickle import load_numpy_pickle, UnsafePickleError\n"
            "data = b'\\x80\\x02c' + b'numpy.f2py.__main__\\n_reconstruct\\n)R.'\n"
            "try:\n    load_numpy_pickle(data)\nexcept UnsafePickleError as e:\n    print('refused:', e)\n"
            "print('imported' if 'numpy.f2py' in sys.modules else 'not imported')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused: the global numpy.f2py.__main__._reconstruct" in out.stdout
    assert out.stdout.strip().endswith("not imported")


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("numpy", "load"),
                                         ("numpy.testing", "ndarray"), ("numpy.lib.format", "read_array")])
def test_anything_off_the_list_is_refused(module, name):
    with pytest.raises(UnsafePickleError, match=f"the global {module}.{name}"):
        load_numpy_pickle(_global(module, name))


def test_extra_globals_are_exact():
    data = pickle.dumps((1, 2), protocol=0)          # protocol 0 builds tuples without a global
    assert load_numpy_pickle(data) == (1, 2)
    from collections import OrderedDict
    od = pickle.dumps(OrderedDict(a=np.ones(2, np.float32)), protocol=2)
    with pytest.raises(UnsafePickleError, match="collections.OrderedDict"):
        load_numpy_pickle(od)
    assert list(load_numpy_pickle(od, extra_globals=[("collections", "OrderedDict")])) == ["a"]


@pytest.mark.parametrize("protocol", [2, 5])
def test_object_arrays_are_refused(protocol):
    for obj in (np.array([1, "a"], dtype=object), np.zeros(2, dtype=[("x", "i4"), ("o", "O")])):
        with pytest.raises(UnsafePickleError, match="object dtype"):
            load_numpy_pickle(pickle.dumps({"a": obj}, protocol=protocol))


class _Huge:
    """Pickles as an ndarray whose state declares ``shape`` over 4 bytes of data."""

    def __init__(self, shape, dtype="u1"):
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, self.dtype, False, b"\0" * 4))


@pytest.mark.parametrize("shape", [(10**11,), (2**40, 2**40), (-1, 4)])
def test_declared_sizes_beyond_the_file_are_refused(shape):
    data = pickle.dumps({"a": _Huge(shape)}, protocol=2)
    assert len(data) < 1000
    with pytest.raises(UnsafePickleError, match="more than the file itself holds|negative dimension"):
        load_numpy_pickle(data)


def test_declared_string_lengths_beyond_the_file_are_refused():
    bomb = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc."     # BINBYTES8 of 1 TiB, 3 bytes present
    with pytest.raises(MalformedPickleError, match="malformed pickle .*expected 1099511627776 bytes"):
        load_numpy_pickle(bomb)


def test_truncated_pickle_is_an_ordinary_error():
    data = pickle.dumps({"a": np.ones(100, np.float32)}, protocol=2)
    with pytest.raises((UnsafePickleError, EOFError, pickle.UnpicklingError, ValueError)):
        load_numpy_pickle(data[: len(data) // 2])
