"""The README is a user's guide whose commands run as shown.

Every ``mmseqrec``, ``finetune`` and ``accelerate launch ... pretrain/run.py`` command of the
README (its bash blocks and its inline code) must parse with the real argument parsers, without
a deprecated spelling, and its ``key=value`` overrides must name real configuration fields.
Running them is ``scripts/check_readme_quickstart.sh``'s job (it needs a fresh clone and half an
hour). The README stays short, and every relative link of the project's Markdown pages resolves.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from pathlib import Path

import pytest

from mmseqrec.config import ConfigError, build_dataclass, parse_overrides
from mmseqrec.runs import check_overrides
from mmseqrec.training import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 320
PROGRAMS = ("mmseqrec", "finetune", "accelerate")

_spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
readme_commands = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_commands)


def readme_commands_of(programs=PROGRAMS):
    text = README.read_text()
    commands = readme_commands.bash_commands(text) + readme_commands.inline_commands(text, programs)
    return [c for c in commands if c.words and c.words[0] in programs]


COMMANDS = readme_commands_of()


def _parse_strictly(parse, argv: list[str]):
    """``parse(argv)`` with argparse's exit and a deprecated option spelling turned into failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        try:
            return parse(argv)
        except SystemExit as exit_:
            pytest.fail(f"the parser rejected {argv} (exit {exit_.code})")
        except FutureWarning as warning:
            pytest.fail(f"{argv}: {warning}")


def _check_finetune_overrides(model_names: list[str], overrides: list[str]) -> None:
    """What ``finetune`` and ``compare`` accept: train.* fields of TrainConfig, model.* fields of
    some model run (``check_overrides``), nothing else."""
    parsed = parse_overrides(overrides)
    unknown = set(parsed) - {"train", "model"}
    assert not unknown, f"unknown section(s) {unknown} in {overrides}"
    build_dataclass(TrainConfig, parsed.get("train") or {}, "train")
    check_overrides(model_names, parsed)


def _model_names(models: str) -> list[str]:
    return [m.split("@")[0].strip().lower() for m in models.split(",") if m.strip()]


def check_mmseqrec(argv: list[str]) -> None:
    from mmseqrec.cli import build_parser
    from mmseqrec.compare import default_models

    args = _parse_strictly(build_parser().parse_args, argv)
    if args.command == "compare":
        _check_finetune_overrides(_model_names(args.models or default_models()), args.overrides)


def check_finetune(argv: list[str]) -> None:
    from finetune.cli import build_parser

    args = _parse_strictly(build_parser().parse_intermixed_args, argv)
    _check_finetune_overrides(_model_names(args.model), args.overrides)


def check_pretrain(argv: list[str]) -> None:
    from mmseqrec.checkpointing import take_resume_option
    from pretrain.run import build_parser, read_config

    args = _parse_strictly(build_parser().parse_intermixed_args, argv)
    take_resume_option(args)
    _config, _name, _data, _train, model_name, model_section = read_config(args)  # data and train sections
    check_overrides([model_name], {"model": model_section})


def check_accelerate(argv: list[str]) -> None:
    from accelerate.commands.launch import launch_command_parser

    assert argv[:1] == ["launch"], f"only `accelerate launch` appears in the README, not {argv}"
    args = _parse_strictly(launch_command_parser().parse_args, argv[1:])
    assert args.training_script == "pretrain/run.py", f"unexpected script {args.training_script}"
    check_pretrain(args.training_script_args)


CHECKS = {"mmseqrec": check_mmseqrec, "finetune": check_finetune, "accelerate": check_accelerate}


def test_the_readme_shows_the_commands_it_should():
    programs = {c.words[0] for c in COMMANDS}
    assert programs == set(PROGRAMS)
    assert len(COMMANDS) >= 40
    marked = [c.text for c in readme_commands.bash_commands(README.read_text()) if c.fresh_clone]
    assert marked[:2] == ["make demo", "make test"], "the quick start comes first in the fresh-clone check"


@pytest.mark.parametrize("command", COMMANDS, ids=[f"line{c.line}" for c in COMMANDS])
def test_readme_command_parses_with_the_real_parsers(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # --config paths are relative to the project root
    words = command.words
    assert not any(re.search(r"<[^>]+>", w) for w in words), f"a placeholder in a command: {command.text}"
    CHECKS[words[0]](words[1:])


def test_commands_run_on_a_fresh_clone_need_no_placeholder_or_outside_data():
    for command in readme_commands.bash_commands(README.read_text()):
        if command.fresh_clone:
            assert "../shared" not in command.text and "DIR" not in command.words, command.text
            assert command.words[0] in PROGRAMS + ("make",), command.text


def test_a_wrong_key_or_option_would_be_caught():
    with pytest.raises(ConfigError):
        check_finetune(["--domain", "syn-Office", "--model", "sasrec", "model.no_such_field=1"])
    with pytest.raises(ConfigError):
        check_mmseqrec(["compare", "--domain", "syn-Office", "--models", "sasrec", "train.no_such_field=1"])
    with pytest.raises(ConfigError):
        check_accelerate(["launch", "pretrain/run.py", "model.no_such_field=1"])
    with pytest.raises(pytest.fail.Exception):
        check_mmseqrec(["export", "release", "--domain", "syn-Office", "--out", "DIR"])  # deprecated spelling
    with pytest.raises(pytest.fail.Exception):
        check_finetune(["--domain", "syn-Office", "--no-such-option"])


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; keep the user's guide short (docs/ has room)"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", path.read_text(), flags=re.M)}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [
    README, ROOT / "BENCHMARKS.md", ROOT / "data" / "README.md", ROOT / "checkpoints" / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),  # the experiment pages and their results folders
]


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` (outside code blocks) to a missing file or heading."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    return broken


def test_every_relative_link_resolves():
    broken = {str(page.relative_to(ROOT)): links for page in PAGES if (links := broken_links(page))}
    assert not broken, f"links to nothing: {broken}"


def test_a_broken_link_would_be_caught(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text("[ok](there.md#a-heading) [gone](missing.md) [no heading](there.md#other) `[code](nowhere.md)`\n")
    assert broken_links(page) == ["missing.md", "there.md#other"]
