"""Command-line options that several commands share, spelled one way everywhere.

- ``--data-dir DIR``: the folder of prepared domains, read by every command that loads a domain
  and written by every ``prepare`` command (default ``$MMSEQREC_DATA_DIR``, else
  ``data/processed``).
- ``--output PATH``: where a command writes its own product (a run folder, exported files, a
  report).

Earlier releases spelled these ``--out`` in some commands. The old spelling still works for
one release: it sets the same value and prints a ``FutureWarning`` naming the new one.
"""

import argparse
import warnings
from pathlib import Path

from mmseqrec.data.loading import default_data_dir


class _DeprecatedSpelling(argparse.Action):
    """Stores into the new option's destination and warns that the spelling is going away."""

    def __init__(self, option_strings, dest, new_spelling: str, **kwargs):
        self.new_spelling = new_spelling
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(
            f"{option_string} is deprecated and will be removed in the next release; use {self.new_spelling}",
            FutureWarning,
            stacklevel=2,
        )
        setattr(namespace, self.dest, values)


def add_deprecated_spelling(parser: argparse.ArgumentParser, old: str, new: str, dest: str, type=None) -> None:
    """Accept ``old`` as a hidden synonym of the option ``new`` (destination ``dest``)."""
    parser.add_argument(old, dest=dest, type=type, action=_DeprecatedSpelling, new_spelling=new, help=argparse.SUPPRESS)


def add_data_dir(parser: argparse.ArgumentParser, role: str = "read", old: str | None = None) -> None:
    """``--data-dir``; ``role`` says whether the command reads domains from it or writes one into
    it; ``old`` is a former spelling that still works with a warning."""
    what = "where prepared domains live" if role == "read" else "the folder of prepared domains to write into"
    parser.add_argument("--data-dir", type=Path, default=None, help=f"{what} (default: $MMSEQREC_DATA_DIR or {default_data_dir()})")
    if old:
        add_deprecated_spelling(parser, old, "--data-dir", "data_dir", type=Path)


def add_output(parser: argparse.ArgumentParser, help: str, required: bool = False, old: str | None = None) -> None:
    """``--output`` for the command's product; ``old`` is a former spelling that still works.

    With a deprecated synonym, ``required`` is checked after parsing (``require_output``), since
    argparse would otherwise insist on the new spelling.
    """
    parser.add_argument("--output", type=Path, default=None, required=required and not old, help=help)
    if old:
        add_deprecated_spelling(parser, old, "--output", "output", type=Path)
        if required:
            parser.set_defaults(output_required=True)


def require_output(args: argparse.Namespace, command: str) -> None:
    """The check ``add_output(required=True, old=...)`` defers: a clear error without ``--output``."""
    if getattr(args, "output_required", False) and args.output is None:
        raise ValueError(f"{command} needs --output: the folder or file to write")
