"""Writing versions: world-readable, stale temporaries cleaned, one writer per base path,
re-indexing from a version directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tfmmsearch.cli import main
from tfmmsearch.contract import list_versions
from tfmmsearch.data.prepare import resolve_catalog_dir
from tfmmsearch.exporting.errors import ExportBusyError
from tfmmsearch.exporting.export import clean_stale_temporaries, exclusive_writer, reindex
from tfmmsearch.model.build import load_run_config


def test_versions_are_world_readable(exported):
    for directory, _, files in os.walk(exported):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755, directory
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o644, name


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-4-{dead.pid}-abcd"
    legacy = tmp_path / ".tmp-4-xyz"  # the old naming, without a pid: a killed export's too
    alive = tmp_path / f".tmp-4-{os.getppid()}-efgh"  # another live writer's: kept
    for path in (stale, legacy, alive):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, legacy])
    assert alive.is_dir() and not stale.exists() and not legacy.exists()


def test_a_second_writer_is_refused_clearly_and_reindex_takes_a_version_dir(
        tiny_run, exported, capsys):
    base = exported.parent
    catalog = resolve_catalog_dir(load_run_config(tiny_run))
    before = sorted(list_versions(base))
    with exclusive_writer(base):
        with pytest.raises(ExportBusyError, match="being written by pid"):
            reindex(base, catalog)
        # The CLI says so in one line, no traceback.
        assert main(["index", "--model", str(base), "--catalog", str(catalog)]) == 1
        err = capsys.readouterr().err
        assert "being written by" in err and "Traceback" not in err
    assert sorted(list_versions(base)) == before  # nothing was written meanwhile
    # A version directory is accepted: that version embeds, the new one goes beside it.
    new_version = reindex(exported, catalog)
    assert new_version.parent == base
    assert int(new_version.name) == max(before) + 1
