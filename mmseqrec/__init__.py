"""mmseqrec: pretraining multimodal sequential recommenders and transferring them to new domains.

``mmseqrec.load(run folder or Hub id, domain=None)`` gives a recommender bound to its domain
(``recommend``, ``encode``, ``item_vectors``, ``add_items``); ``mmseqrec.load_pretrained``
gives the bare model. Both live in ``mmseqrec.inference`` and are imported on first use, so
that ``import mmseqrec.data`` stays light.
"""

__version__ = "0.1.0"

_LAZY = {"load": "mmseqrec.inference", "load_pretrained": "mmseqrec.inference"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmseqrec' has no attribute {name!r}")
