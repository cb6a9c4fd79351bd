"""One module per input source. Each exposes ``register(subparsers)``, which adds its
``mmseqrec prepare <source>`` subcommand, and a function that returns ``DomainTables``."""

SOURCE_MODULES = ("synthetic", "release", "lcrec", "amazon2018", "amazon2023", "mixture", "cold", "general_split", "diffmm")
