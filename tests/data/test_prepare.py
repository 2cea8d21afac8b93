"""prepare_data with a search log: the synthetic log simulated once, the log read and split by
day, attribute queries only when attributes are a source, bad log settings named."""

from __future__ import annotations

import json

import pytest

from tfmmsearch.config import ConfigError, load_config
from tfmmsearch.data.prepare import LOG_SPLIT_FILE, prepare_data
from tfmmsearch.data.search_log import SearchLogError


def config_for(work_dir, *overrides):
    return load_config(None, [f"data.work_dir={work_dir}", "data.synthetic.num_items=80",
                              "data.synthetic.image_size=16", *overrides])


LOG_ONLY = ("data.sources.attributes=0", "data.sources.search_log=1")


def test_the_synthetic_log_is_simulated_once_and_split_by_day(tmp_path):
    config = config_for(tmp_path, *LOG_ONLY, "data.search_log.synthetic_sessions=300",
                        "data.search_log.synthetic_days=10")
    prepared = prepare_data(config, progress=False)
    log = prepared.search_log
    assert sum(len(s) for s in log.splits().values()) == 300
    assert max(log.days["train"]) < min(log.days["validation"]) <= max(log.days["validation"]) \
        < min(log.days["test"])
    assert all(not queries for queries in prepared.queries.values())  # attributes: no source
    summary = json.loads((tmp_path / LOG_SPLIT_FILE).read_text())
    assert summary["sessions"] == {name: len(s) for name, s in log.splits().items()}
    path = prepared.catalog.root / "search_log.jsonl"
    written = path.stat().st_mtime_ns
    prepare_data(config, progress=False)
    assert path.stat().st_mtime_ns == written  # same parameters: reused
    more = config_for(tmp_path, *LOG_ONLY, "data.search_log.synthetic_sessions=400",
                      "data.search_log.synthetic_days=10")
    assert sum(len(s) for s in prepare_data(more, progress=False).search_log.splits().values()) == 400


def test_attribute_queries_can_be_asked_for_by_the_evaluation(tmp_path):
    config = config_for(tmp_path, *LOG_ONLY, "data.search_log.synthetic_sessions=100")
    prepared = prepare_data(config, progress=False, attribute_queries=True)
    assert prepared.queries["test"]
    both = config_for(tmp_path, "data.sources.search_log=1",
                      "data.search_log.synthetic_sessions=100")
    assert prepare_data(both, progress=False).queries["train"]


def test_a_log_source_needs_a_log_and_a_bad_log_is_named(tmp_path):
    with pytest.raises(ConfigError, match="needs a log"):
        config_for(tmp_path, *LOG_ONLY)
    bad = tmp_path / "log.jsonl"
    bad.write_text('{"session_id": "s1"}\n', encoding="utf-8")
    config = config_for(tmp_path, *LOG_ONLY, f"data.search_log.path={bad}",
                        "data.on_bad_row=error")
    with pytest.raises(SearchLogError, match=r"log.jsonl, line 1"):
        prepare_data(config, progress=False)


def test_training_days_can_be_narrowed_without_moving_the_test_days(tmp_path):
    base = config_for(tmp_path, *LOG_ONLY, "data.search_log.synthetic_sessions=300",
                      "data.search_log.synthetic_days=10")
    full = prepare_data(base, progress=False).search_log
    last = str(full.days["train"][2])
    early = config_for(tmp_path, *LOG_ONLY, "data.search_log.synthetic_sessions=300",
                       "data.search_log.synthetic_days=10",
                       f"data.search_log.train_until={last}")
    narrowed = prepare_data(early, progress=False).search_log
    assert [str(d) for d in narrowed.days["train"]] == [str(d) for d in full.days["train"][:3]]
    assert [s.session_id for s in narrowed.test] == [s.session_id for s in full.test]
    with pytest.raises(ConfigError, match="not a date"):
        config_for(tmp_path, *LOG_ONLY, "data.search_log.synthetic_sessions=300",
                   "data.search_log.train_from=yesterday")
    late = config_for(tmp_path, *LOG_ONLY, "data.search_log.synthetic_sessions=300",
                      "data.search_log.synthetic_days=10", "data.search_log.train_from=2030-01-01")
    with pytest.raises(ValueError, match="no training day"):
        prepare_data(late, progress=False)
