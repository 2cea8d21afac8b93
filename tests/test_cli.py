"""The CLI: every command has help, config errors exit 2 naming the key, bad catalogs exit 1."""

import subprocess
import sys

import pytest

from tfmmsearch.cli import build_parser, main

pytestmark = pytest.mark.heavy  # trains or exports in its fixtures: scheduled first

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


# --------------------------------------------------------------------------- evaluate --judgments


def test_evaluate_with_a_bad_judgments_file_names_its_line(tmp_path, capsys):
    path = tmp_path / "judged.jsonl"
    path.write_text('{"query": "red shirt", "judgments": {"p1": 1}}\n'
                    '{"query": "blue jeans", "judgments": {"p2": "high"}}\n')
    # The file is read before the run is opened, so the run need not exist to be refused.
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--judgments", str(path)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"tfmmsearch: error: {path}, line 2, field 'judgments': grade of 'p2'")


def test_evaluate_judgments_only_needs_judgments(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path), "--judgments-only"]) == 1
    assert "needs judged queries (--judgments FILE)" in _one_error_line(capsys.readouterr().err)


def test_evaluate_judgments_end_to_end(tiny_run, capsys):
    """An untrained tiny run: the judged task lands in every system's row, in its own files."""
    import json

    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.judgments import JudgedQuery, write_judgments
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.evaluation.judged import evaluate_judged
    from tfmmsearch.evaluation.protocol import BM25System
    from tfmmsearch.model.build import load_run_config

    products = read_catalog(resolve_catalog_dir(load_run_config(tiny_run))).products
    queries = [JudgedQuery(products[0].title, {products[0].product_id: 2, "not-sold": 1}),
               JudgedQuery(products[-1].title, {products[-1].product_id: 1})]
    path = write_judgments(tiny_run / "judged.jsonl", queries)

    assert main(["evaluate", "--run", str(tiny_run), "--judgments", str(path),
                 "--judgments-only"]) == 0
    out = capsys.readouterr().out
    assert "judged NDCG@10" in out and "full NDCG@10" not in out
    assert "1 judged products not in the catalog (1 judgments)" in out
    rows = json.loads((tiny_run / "evaluation-judged.json").read_text())
    assert len(rows) == 5 and all(set(row) == {"system", "judged"} for row in rows)
    assert {row["judged"]["num_queries"] for row in rows} == {2}
    bm25 = evaluate_judged([BM25System()], queries, [p.product_id for p in products],
                           [p.title for p in products],
                           [str(p.image_path) if p.image_path else "" for p in products])
    assert rows[0] == json.loads(json.dumps(bm25[0].to_dict()))  # the whole catalog, all splits
    assert "(every split)" in (tiny_run / "evaluation-judged.md").read_text()

    assert main(["evaluate", "--run", str(tiny_run), "--judgments", str(path),
                 "--max-queries", "20"]) == 0
    rows = json.loads((tiny_run / "evaluation-test-judged.json").read_text())
    assert all({"full", "image_only", "title_to_image", "judged"} <= set(row) for row in rows)
    assert not (tiny_run / "evaluation-test.json").exists()  # the protocol's file is not touched
