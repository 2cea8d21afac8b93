"""`tfmmsearch query` end to end: the stand-in in-process and through the TF Serving test double."""

from __future__ import annotations

import re

import pytest

from tests.serving.conftest import MODEL_NAME, QUERIES, STAND_IN_TOP_K
from tfmmsearch.cli import main

# Attribute weights are printed where the item has the attribute modality (weight above 0).
ROW = re.compile(r"^\s+(\d+)\.\s+(p\d)\s+score\s+(-?[\d.]+)\s+weights text [\d.]+ image [\d.]+"
                 r"( attributes [\d.]+)?$")


def _targets(server, base_path) -> dict[str, str]:
    return {"local": str(base_path), "rest": server.rest_url, "grpc": server.grpc_target}


@pytest.mark.parametrize("kind", ["local", "rest", "grpc"])
def test_query_prints_the_same_top_k_on_every_transport(kind, fixture_server, stand_in_base_path,
                                                        local_client, capsys):
    target = _targets(fixture_server, stand_in_base_path)[kind]
    assert main(["query", target, *QUERIES[:2], "-k", "2", "--timeout", "5"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    rows = [ROW.match(line) for line in out.splitlines() if not line.startswith("query:")]
    assert all(rows), out
    expected = local_client.search(QUERIES[:2])["product_ids"][:, :2].ravel().tolist()
    assert [m.group(2) for m in rows] == expected
    assert [int(m.group(1)) for m in rows] == [1, 2, 1, 2]


def test_query_k_above_the_export_top_k_prints_what_there_is(stand_in_base_path, capsys):
    assert main(["query", str(stand_in_base_path), "red dress", "-k", "50"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if ROW.match(line)]
    assert len(rows) == STAND_IN_TOP_K


@pytest.mark.parametrize("kind, code", [("rest", "HTTP 404"), ("grpc", "NOT_FOUND")])
def test_query_a_model_the_server_does_not_have_prints_its_message(kind, code, fixture_server,
                                                                   stand_in_base_path, capsys):
    target = _targets(fixture_server, stand_in_base_path)[kind]
    assert main(["query", target, "red dress", "--model-name", "no_such_model"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("tfmmsearch: error: ")
    assert code in err and "Servable not found for request: Latest(no_such_model)" in err
    assert main(["query", target, "red dress", "--model-name", MODEL_NAME]) == 0  # and it still serves
