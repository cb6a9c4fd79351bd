"""Model registry: name -> (model class, config class)."""

from mmseqrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from mmseqrec.models.missrec import MISSRec, MISSRecConfig
from mmseqrec.models.mmmlp import MMMLP, MMMLPConfig
from mmseqrec.models.mostpop import MostPop, MostPopConfig
from mmseqrec.models.sasrec import SASRec, SASRecConfig
from mmseqrec.models.unisrec import UniSRec, UniSRecConfig

MODELS = {
    "missrec": (MISSRec, MISSRecConfig),
    "sasrec": (SASRec, SASRecConfig),
    "mostpop": (MostPop, MostPopConfig),
    "bert4rec": (BERT4Rec, BERT4RecConfig),
    "mmmlp": (MMMLP, MMMLPConfig),
    "unisrec": (UniSRec, UniSRecConfig),
}


def model_classes(name: str):
    """(model class, config class) for a model name; a clear error for unknown names."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(sorted(MODELS))}") from None


__all__ = [
    "MMMLP", "MODELS", "BERT4Rec", "BERT4RecConfig", "MISSRec", "MISSRecConfig", "MMMLPConfig", "MostPop", "MostPopConfig",
    "SASRec", "SASRecConfig", "UniSRec", "UniSRecConfig", "model_classes",
]
