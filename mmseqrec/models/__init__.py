"""Model registry: name -> (model class, config class)."""

from mmseqrec.models.missrec import MISSRec, MISSRecConfig
from mmseqrec.models.mostpop import MostPop, MostPopConfig
from mmseqrec.models.sasrec import SASRec, SASRecConfig
from mmseqrec.models.unisrec import UniSRec, UniSRecConfig

MODELS = {
    "missrec": (MISSRec, MISSRecConfig),
    "sasrec": (SASRec, SASRecConfig),
    "mostpop": (MostPop, MostPopConfig),
    "unisrec": (UniSRec, UniSRecConfig),
}


def model_classes(name: str):
    """(model class, config class) for a model name; a clear error for unknown names."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(sorted(MODELS))}") from None


__all__ = ["MODELS", "MISSRec", "MISSRecConfig", "MostPop", "MostPopConfig", "SASRec", "SASRecConfig", "UniSRec", "UniSRecConfig", "model_classes"]
