"""The CLI: every command has help, config errors exit 2 naming the key, bad catalogs exit 1."""

import subprocess
import sys

import pytest

from tfmmsearch.cli import build_parser, main

COMMANDS = [["demo"], ["train"], ["evaluate"], ["export"], ["index"], ["query"], ["data", "validate"],
            ["data", "validate-log"],
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
    assert not (tmp_path / "c" / "search_log.jsonl").exists()  # no log unless asked for


def test_synthesize_with_a_search_log_that_validates_against_the_catalog(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["data", "synthesize", str(out), "--num-items", "30", "--image-size", "16",
                 "--search-log-sessions", "40"]) == 0
    assert "synthetic search log of 40 sessions" in capsys.readouterr().out
    assert main(["data", "validate-log", str(out / "search_log.jsonl"), "--catalog", str(out)]) == 0
    assert "read 40 rows: 40 ok, 0 skipped" in capsys.readouterr().out
    assert main(["data", "synthesize", str(tmp_path / "d"), "--search-log-sessions", "-1"]) == 1
    assert "--search-log-sessions must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- query: ordinary mistakes


def _one_error_line(err: str) -> str:
    """The stderr of a refused command: exactly one `tfmmsearch: ...` line, no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("target, label", [("http://127.0.0.1:{port}", "REST"), ("127.0.0.1:{port}", "gRPC")])
def test_query_an_unreachable_server_is_one_line_naming_it(target, label, capsys):
    import time

    from tests.serving.ports import free_port

    target = target.format(port=free_port())
    started = time.monotonic()
    assert main(["query", target, "red dress", "--timeout", "3"]) == 1
    assert time.monotonic() - started < 8  # refused at once, and never past --timeout
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"tfmmsearch: error: cannot reach TF Serving over {label} at {target}")


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_query_timeout_reaches_the_client(target, capsys):
    import time

    from tests.serving.ports import silent_listener

    with silent_listener() as port:
        started = time.monotonic()
        assert main(["query", target.format(port=port), "red dress", "--timeout", "0.5"]) == 1
        assert time.monotonic() - started < 5
    line = _one_error_line(capsys.readouterr().err)
    assert "within 0.5s" in line and f"127.0.0.1:{port}" in line


@pytest.mark.parametrize("target", ["export/x", "./x", "x", "/no/such/export"])
def test_query_a_missing_export_says_so(target, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["query", target, "red dress"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"tfmmsearch: error: {target}: no such export directory")
    assert "Domain name" not in line


@pytest.mark.parametrize("option, value, message", [
    ("-k", "-2", "k must be >= 1, got -2"),
    ("-k", "0", "k must be >= 1, got 0"),
    ("-k", "five", "k must be an integer >= 1"),
    ("--timeout", "0", "timeout must be positive seconds"),
    ("--timeout", "-1", "timeout must be positive seconds"),
    ("--timeout", "soon", "timeout must be a number of seconds"),
])
def test_query_refuses_bad_k_and_timeout_before_doing_anything(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["query", "export/never-opened", "red dress", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"argument {option}: {message}" in err


def test_query_default_timeout_is_the_clients():
    from tfmmsearch.serving.client import DEFAULT_TIMEOUT

    args = build_parser().parse_args(["query", "127.0.0.1:8500", "q"])
    assert args.timeout == DEFAULT_TIMEOUT and args.k == 5
