"""mmseqrec: pretraining multimodal sequential recommenders and transferring them to new domains."""

__version__ = "0.1.0"
