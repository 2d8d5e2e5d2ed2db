"""Read official SMPL pickles without chumpy and without running code from the file.

The official ``SMPL_*.pkl`` / ``basicModel_*.pkl`` files were written by Python 2 with chumpy objects
(``chumpy.ch.Ch`` wrapping a numpy array) and a scipy sparse ``J_regressor``. ``pickle.load`` would import
chumpy (unmaintained, broken on numpy 2) and, for any pickle, can call arbitrary functions named in the
file. ``SafeUnpickler`` only resolves an allow-list of numpy reconstructors and maps the chumpy and scipy
sparse classes to inert stand-ins whose state is then turned into plain numpy arrays. Anything else in the
file (``os.system``, ``builtins.eval``, ...) is refused with an error that names the file.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from animlcm.errors import AnimlcmError


class _ChStandIn:
    """Takes the place of ``chumpy.ch.Ch`` (and subclasses): keeps the pickled ``__dict__`` only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}

    def to_numpy(self, where: str) -> np.ndarray:
        # A plain Ch stores its value as 'x'; derived expressions (Select, MatVecMult, ...) do not,
        # and evaluating them would need chumpy itself.
        if "x" not in self.state:
            raise AnimlcmError(
                f"{where}: holds a chumpy expression, not a plain array; convert it on a machine with chumpy "
                "(np.array(value)) or use the official SMPL v1.1 files"
            )
        return np.asarray(_plain(self.state["x"], where))


class _SparseStandIn:
    """Takes the place of scipy's ``csc_matrix`` / ``csr_matrix``: densified from data/indices/indptr."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def to_numpy(self, where: str, fmt: str) -> np.ndarray:
        try:
            data = np.asarray(self.state["data"])
            indices = np.asarray(self.state["indices"], dtype=np.int64)
            indptr = np.asarray(self.state["indptr"], dtype=np.int64)
            shape = tuple(int(s) for s in self.state.get("_shape", self.state.get("shape")))
        except (KeyError, TypeError) as exc:
            raise AnimlcmError(f"{where}: unreadable sparse matrix in the pickle ({exc})") from None
        dense = np.zeros(shape, dtype=np.float64)
        counts = np.diff(indptr)
        major = np.repeat(np.arange(len(counts)), counts)
        if fmt == "csc":  # indptr runs over columns, indices are rows
            np.add.at(dense, (indices, major), data)
        else:
            np.add.at(dense, (major, indices), data)
        return dense


class _CscStandIn(_SparseStandIn):
    fmt = "csc"


class _CsrStandIn(_SparseStandIn):
    fmt = "csr"


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's own reconstructors under every module path old and new pickles name them by."""
    from numpy.lib import format as _fmt  # noqa: F401 - makes sure numpy's pickle helpers are loaded

    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = core.multiarray._reconstruct
        allowed[(mod, "scalar")] = core.multiarray.scalar
    for mod in ("numpy", "numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "ndarray")] = np.ndarray
        allowed[(mod, "dtype")] = np.dtype
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = core.numeric._frombuffer
    # copyreg._reconstructor(cls, base, state) only calls base.__new__(cls): cls itself is allow-listed.
    allowed[("copyreg", "_reconstructor")] = copyreg._reconstructor
    allowed[("builtins", "object")] = object
    # protocol-2 pickles written by Python 3 wrap raw bytes as codecs.encode(text, "latin1"): pure data.
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An ``Unpickler`` that resolves only numpy arrays, chumpy ``Ch`` and scipy sparse matrices."""

    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles store numpy buffers as latin1 str
        self.where = where
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module.split(".")[0] == "chumpy":
            return _ChStandIn
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return _CscStandIn if name == "csc_matrix" else _CsrStandIn
        raise AnimlcmError(
            f"{self.where}: the pickle asks for '{module}.{name}', which a SMPL model file never needs; "
            "refusing to load it (only numpy arrays, chumpy arrays and scipy sparse matrices are read)"
        )


def _plain(value: Any, where: str) -> Any:
    """Replace stand-ins (also inside dicts/lists) by numpy arrays."""
    if isinstance(value, _ChStandIn):
        return value.to_numpy(where)
    if isinstance(value, _SparseStandIn):
        return value.to_numpy(where, value.fmt)
    if isinstance(value, dict):
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    return value


def load_pickle_safely(path: Path) -> dict[str, Any]:
    """Load a (possibly chumpy) SMPL pickle as a dict of plain numpy arrays; never executes file code."""
    where = str(path)
    try:
        with open(path, "rb") as fh:
            obj = SafeUnpickler(fh, where).load()
    except AnimlcmError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise AnimlcmError(f"{where}: not a readable SMPL pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise AnimlcmError(f"{where}: expected a dict of arrays in the pickle, found {type(obj).__name__}")
    return _plain(obj, where)
