"""Processed-domain format, loading and batching. Raw-source importers live in ``sources``."""

from mmseqrec.data.format import DataFormatError, DomainTables, Examples, FeatureSet, write_domain
from mmseqrec.data.loading import Domain, DomainNotFoundError, default_data_dir, load_domain, load_mixture

__all__ = [
    "DataFormatError",
    "Domain",
    "DomainNotFoundError",
    "DomainTables",
    "Examples",
    "FeatureSet",
    "default_data_dir",
    "load_domain",
    "load_mixture",
    "write_domain",
]
