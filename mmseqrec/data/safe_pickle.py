"""Reading the sparse matrices that releases such as DiffMM ship as pickles, without running code.

A pickle is a program: loading one can call any importable function (``os.system`` included)
through the classes and functions it names. ``load_sparse_matrix`` therefore reads a pickle in
two passes:

1. **A dry run.** Every class or function the pickle names is replaced by an inert stand-in
   (which accepts any arguments and does nothing), so the whole program runs without
   constructing anything real; the names are only recorded. Persistent ids and out-of-band
   buffers are refused outright.
2. If every recorded name is on the allow-list (the scipy sparse matrix classes and the numpy
   classes and reconstruction helpers their state needs), the pickle is loaded for real by an
   unpickler that can resolve only those names. Otherwise nothing is loaded, and the error
   names the file and every name that was refused.

The result must be a two-dimensional scipy sparse matrix or array; it is returned in COO form.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from mmseqrec.data.format import DataFormatError

#: (module, name) pairs a sparse-matrix pickle may name. numpy moved its internals from
#: ``numpy.core`` to ``numpy._core`` (2.0) and scipy its classes from ``scipy.sparse.coo`` to
#: ``scipy.sparse._coo`` (1.8), so a pickle names one or the other depending on who wrote it.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [(f"scipy.sparse.{module}", cls) for module in ("coo", "_coo", "csr", "_csr", "csc", "_csc")
     for cls in ("coo_matrix", "csr_matrix", "csc_matrix", "coo_array", "csr_array", "csc_array")]
    + [("scipy.sparse", cls) for cls in ("coo_matrix", "csr_matrix", "csc_matrix", "coo_array", "csr_array", "csc_array")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [(f"numpy.{core}.multiarray", helper) for core in ("core", "_core") for helper in ("_reconstruct", "scalar")]
    + [("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")]
    # protocol 0-2 pickles carry raw bytes as latin-1 text turned back into bytes by this encoder
    + [("_codecs", "encode")]
    # protocol 0-1 pickles build objects through copyreg, which can only build the classes above
    + [("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object")]
)


class _Inert:
    """Stands in for every class and function during the dry run: calling it, building it or
    giving it state does nothing, and it never resolves the real object."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass


class _DryRun(pickle.Unpickler):
    """Records every (module, name) the pickle asks for and hands back an inert stand-in."""

    def __init__(self, handle):
        super().__init__(handle)
        self.names: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str):
        self.names.append((module, name))
        return type(f"Inert_{len(self.names)}", (_Inert,), {})

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("the pickle refers to persistent objects, which a matrix pickle never does")


class _AllowListed(pickle.Unpickler):
    """Resolves only the allow-listed names (a second line of defence after the dry run)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
        if module.startswith("scipy.sparse"):  # the class itself, not scipy's deprecated module path to it
            import scipy.sparse

            return getattr(scipy.sparse, name)
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent objects are not allowed")


def load_sparse_matrix(path: str | Path):
    """The scipy sparse matrix pickled in ``path``, as ``scipy.sparse.coo_matrix``; a
    ``DataFormatError`` naming the file when the pickle names anything else (nothing is then
    constructed) or does not hold a 2-D sparse matrix."""
    import scipy.sparse

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot be read ({err})") from err
    dry = _DryRun(io.BytesIO(data))
    try:
        dry.load()
    except Exception as err:  # a malformed pickle: any error of the dry run means "not a matrix pickle"
        raise DataFormatError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err
    refused = sorted({f"{module}.{name}" for module, name in dry.names if (module, name) not in ALLOWED})
    if refused:
        raise DataFormatError(
            f"{path}: refused to load: the pickle names {', '.join(refused)}, and a sparse-matrix pickle may only name the "
            "scipy sparse matrix classes and numpy's array helpers. A pickle can run code when loaded; this one was not loaded."
        )
    try:
        matrix = _AllowListed(io.BytesIO(data)).load()
    except Exception as err:
        raise DataFormatError(f"{path}: could not be loaded as a sparse matrix ({type(err).__name__}: {err})") from err
    if not scipy.sparse.issparse(matrix) or matrix.ndim != 2:
        raise DataFormatError(f"{path}: expected a 2-D scipy sparse matrix (users x items), got {type(matrix).__name__}")
    return scipy.sparse.coo_matrix(matrix)
