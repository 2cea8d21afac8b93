"""The CLI: every command has help, config errors exit 2 naming the key, bad catalogs exit 1."""

import subprocess
import sys

import pytest

from tfmmsearch.cli import build_parser, main

COMMANDS = [["demo"], ["train"], ["evaluate"], ["export"], ["index"], ["query"], ["data", "validate"],
            ["data", "synthesize"], ["data", "prepare"], ["hub", "list"], ["hub", "build"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(command + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: tfmmsearch" in capsys.readouterr().out


def test_console_script_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "tfmmsearch.cli", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for name in ("demo", "train", "evaluate", "export", "index", "query", "hub"):
        assert name in result.stdout


def test_config_errors_exit_2_and_name_the_key(capsys):
    assert main(["data", "prepare", "--set", "training.batch_sise=3"]) == 2
    assert "training.batch_sise: unknown key" in capsys.readouterr().err


def test_bad_catalog_exits_1_naming_the_file(tmp_path, capsys):
    (tmp_path / "products.csv").write_text("product_id,title\n1,x\n")
    assert main(["data", "validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "products.csv" in err and "image" in err


def test_synthesize_then_validate(tmp_path, capsys):
    assert main(["data", "synthesize", str(tmp_path / "c"), "--num-items", "30"]) == 0
    assert main(["data", "validate", str(tmp_path / "c")]) == 0
    assert "read 30 rows: 30 ok, 0 skipped" in capsys.readouterr().out
