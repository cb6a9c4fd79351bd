"""The shell commands a Markdown file shows, one logical line each.

    python scripts/readme_commands.py README.md                # every command of its bash blocks
    python scripts/readme_commands.py --fresh-clone README.md  # those of the blocks marked to run

A bash block is a fenced code block that opens with ```bash. Lines ending in a backslash are
joined with the next; a trailing ``# comment`` is dropped. A block preceded by the line
``<!-- fresh-clone: run -->`` is one that ``scripts/check_readme_quickstart.sh`` runs, as shown,
in a fresh clone. ``tests/test_readme.py`` checks every command with the real argument parsers.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

FRESH_CLONE_MARK = "<!-- fresh-clone: run -->"
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass
class Command:
    line: int  # where it starts in the file (1-based)
    text: str  # the command without its comment, continuation lines joined
    fresh_clone: bool  # from a block marked to run on a fresh clone

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` that starts a word, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def bash_commands(text: str) -> list[Command]:
    """Every command of the file's ```bash blocks, in order."""
    commands: list[Command] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```bash":
            i += 1
            continue
        marked = i > 0 and lines[i - 1].strip() == FRESH_CLONE_MARK
        i += 1
        pending, start = "", 0
        while i < len(lines) and lines[i].strip() != "```":
            stripped = _strip_comment(lines[i]).strip()
            if not pending:
                start = i + 1
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
            elif pending or stripped:
                commands.append(Command(start, (pending + stripped).strip(), marked))
                pending = ""
            i += 1
        i += 1
    return commands


def inline_commands(text: str, programs: tuple[str, ...]) -> list[Command]:
    """Inline code spans outside code blocks that start with one of ``programs`` and give it at
    least two words (``mmseqrec compare`` alone names a command; it does not run one)."""
    found, in_block = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            continue
        for match in INLINE_CODE.finditer(line):
            span = match.group(1).strip()
            if span.split(" ", 1)[0] in programs and len(span.split()) >= 3:
                found.append(Command(number, span, False))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("markdown", type=Path)
    parser.add_argument("--fresh-clone", action="store_true", help=f"only the blocks marked {FRESH_CLONE_MARK}")
    args = parser.parse_args(argv)
    for command in bash_commands(args.markdown.read_text()):
        if command.fresh_clone or not args.fresh_clone:
            print(command.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
