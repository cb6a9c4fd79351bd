"""Model registry: name -> (model class, config class). The sequential models and MostPop, then the
general top-N models (``track = "topn"``)."""

from mmseqrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from mmseqrec.models.bm3 import BM3, BM3Config
from mmseqrec.models.diffmm import DiffMM, DiffMMConfig
from mmseqrec.models.freedom import FREEDOM, FREEDOMConfig
from mmseqrec.models.lattice import LATTICE, LATTICEConfig
from mmseqrec.models.lightgcn import LightGCN, LightGCNConfig
from mmseqrec.models.mfbpr import MFBPR, MFBPRConfig
from mmseqrec.models.missrec import MISSRec, MISSRecConfig
from mmseqrec.models.mmmlp import MMMLP, MMMLPConfig
from mmseqrec.models.mostpop import MostPop, MostPopConfig
from mmseqrec.models.sasrec import SASRec, SASRecConfig
from mmseqrec.models.unisrec import UniSRec, UniSRecConfig
from mmseqrec.models.vbpr import VBPR, VBPRConfig

MODELS = {
    "missrec": (MISSRec, MISSRecConfig),
    "sasrec": (SASRec, SASRecConfig),
    "mostpop": (MostPop, MostPopConfig),
    "bert4rec": (BERT4Rec, BERT4RecConfig),
    "mmmlp": (MMMLP, MMMLPConfig),
    "unisrec": (UniSRec, UniSRecConfig),
    # the general top-N track (per-user item splits; mmseqrec.models.graph)
    "mfbpr": (MFBPR, MFBPRConfig),
    "lightgcn": (LightGCN, LightGCNConfig),
    "vbpr": (VBPR, VBPRConfig),
    "lattice": (LATTICE, LATTICEConfig),
    "freedom": (FREEDOM, FREEDOMConfig),
    "bm3": (BM3, BM3Config),
    "diffmm": (DiffMM, DiffMMConfig),
}


def model_classes(name: str):
    """(model class, config class) for a model name; a clear error for unknown names."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(sorted(MODELS))}") from None


__all__ = [
    "BM3", "FREEDOM", "LATTICE", "MFBPR", "MMMLP", "MODELS", "VBPR", "BERT4Rec", "BERT4RecConfig", "BM3Config", "DiffMM", "DiffMMConfig",
    "FREEDOMConfig", "LATTICEConfig", "LightGCN", "LightGCNConfig", "MFBPRConfig", "MISSRec", "MISSRecConfig", "MMMLPConfig", "MostPop",
    "MostPopConfig", "SASRec", "SASRecConfig", "UniSRec", "UniSRecConfig", "VBPRConfig", "model_classes",
]
