"""One spelling per idea across every command: --data-dir for prepared domains, --output for a
command's product; the former --out spellings still work for one release, with a warning."""

import warnings
from pathlib import Path

import pytest
from fixtures import write_release

from finetune.cli import build_parser as finetune_parser
from mmseqrec.cli import build_parser, main
from mmseqrec.data.loading import load_domain


def _subcommand_parsers(parser):
    """Every (command words, parser) below ``parser``."""
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield [name], sub
            for words, deeper in _subcommand_parsers(sub):
                yield [name, *words], deeper


def _visible_options(parser) -> set[str]:
    return {s for a in parser._actions if a.help != "==SUPPRESS==" for s in a.option_strings}


def test_every_command_spells_the_data_folder_and_the_product_one_way():
    commands = dict((" ".join(words), sub) for words, sub in _subcommand_parsers(build_parser()))
    commands["finetune"] = finetune_parser()
    for name, parser in commands.items():
        options = _visible_options(parser)
        assert "--out" not in options, f"{name} still shows --out"
        assert "--out-dir" not in options, name
        if name.startswith("prepare "):
            assert "--data-dir" in options, f"{name} cannot be told where prepared domains go"
    for name in ("info", "evaluate", "extract", "compare", "export release", "finetune"):
        assert "--data-dir" in _visible_options(commands[name]), name
    for name in ("evaluate", "compare", "export release", "finetune"):
        assert "--output" in _visible_options(commands[name]), name


def test_prepare_release_with_data_dir_and_the_old_spelling_warns(tmp_path: Path):
    release = write_release(tmp_path / "raw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        assert main(["prepare", "release", "--path", str(release.folder), "--data-dir", str(tmp_path / "new"), "--dim", str(release.dim)]) == 0
    assert load_domain("Tiny", data_dir=tmp_path / "new").num_items > 0
    with pytest.warns(FutureWarning, match="--out is deprecated.*use --data-dir"):
        assert main(["prepare", "release", "--path", str(release.folder), "--out", str(tmp_path / "old"), "--dim", str(release.dim)]) == 0
    assert (tmp_path / "old" / "Tiny" / "manifest.json").is_file()


def test_export_release_takes_output_and_the_old_spelling_warns(tmp_path: Path, capsys):
    release = write_release(tmp_path / "raw")
    processed = tmp_path / "processed"
    assert main(["prepare", "release", "--path", str(release.folder), "--data-dir", str(processed), "--dim", str(release.dim)]) == 0
    assert main(["export", "release", "--domain", "Tiny", "--data-dir", str(processed), "--output", str(tmp_path / "a")]) == 0
    with pytest.warns(FutureWarning, match="use --output"):
        assert main(["export", "release", "--domain", "Tiny", "--data-dir", str(processed), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "Tiny.test.inter").read_bytes() == (tmp_path / "b" / "Tiny.test.inter").read_bytes()
    capsys.readouterr()
    assert main(["export", "release", "--domain", "Tiny", "--data-dir", str(processed)]) == 2
    assert "needs --output" in capsys.readouterr().err


def test_data_dir_defaults_to_the_environment_variable(tmp_path: Path, monkeypatch):
    release = write_release(tmp_path / "raw")
    monkeypatch.setenv("MMSEQREC_DATA_DIR", str(tmp_path / "from-env"))
    assert main(["prepare", "release", "--path", str(release.folder), "--dim", str(release.dim)]) == 0
    assert (tmp_path / "from-env" / "Tiny" / "manifest.json").is_file()
