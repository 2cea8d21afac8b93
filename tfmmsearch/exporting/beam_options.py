"""What a Beam embedding run is asked to do, importable without Beam or TensorFlow.

The CLI checks `--runner` and builds these options before anything heavy loads, so a typo or
a missing `apache-beam` is one line, not a traceback (exporting/beam_embedding.py runs them).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

# The runners `tfmmsearch index --runner` accepts: Beam's local one and the three clusters it
# documents for Python batch pipelines. Anything else is a user mistake, named as such.
RUNNERS = ("DirectRunner", "FlinkRunner", "SparkRunner", "DataflowRunner")
# Also accepted, not advertised: DirectRunner's bundle engine (it retries a failed bundle,
# which the multi-process DirectRunner does not: Beam issue #18640) and any job server.
OTHER_RUNNERS = ("BundleBasedDirectRunner", "PortableRunner", "PrismRunner")
BAD_ROW_POLICIES = ("error", "skip")  # as catalog reads (data/catalog.py)


class BeamUnavailableError(ValueError):
    """The Beam path was asked for but cannot run (apache-beam missing, an unknown runner)."""


@dataclass(frozen=True)
class BeamEmbedOptions:
    """A Beam embedding run: where, how and with which Beam pipeline options.

    `pipeline_args` go to `PipelineOptions` as they are (e.g. `--direct_num_workers=2`,
    `--project=...`); `--runner` is set from `runner`. `embeddings_dir` receives the work list,
    the TFRecord shards and the bad-row files (None: a temporary directory beside the export,
    removed once the index is built). `batch_size` items go through `index_outputs` per call;
    `intra_op_threads` / `inter_op_threads` (None: TensorFlow's choice) bound each worker's
    TensorFlow thread pools, so N workers on one machine do not each take every core.
    """

    runner: str = "DirectRunner"
    pipeline_args: tuple[str, ...] = ()
    embeddings_dir: Path | str | None = None
    batch_size: int = 64
    on_bad_row: str = "error"
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    shards: int = 0  # output files; 0: the runner decides

    def __post_init__(self):
        check_runner(self.runner)
        if self.on_bad_row not in BAD_ROW_POLICIES:
            raise ValueError(f"on_bad_row must be one of {', '.join(BAD_ROW_POLICIES)}, "
                             f"got {self.on_bad_row!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None), got {value}")
        if self.shards < 0:
            raise ValueError(f"shards must be >= 0, got {self.shards}")
        bad = [arg for arg in self.pipeline_args if arg.split("=", 1)[0] == "--runner"]
        if bad:
            raise ValueError(f"give the runner as the runner option, not as a pipeline "
                             f"option ({bad[0]})")


def check_runner(runner: str) -> None:
    """An unknown runner, or any runner without apache-beam installed, is a BeamUnavailableError."""
    if runner not in RUNNERS + OTHER_RUNNERS:
        raise BeamUnavailableError(f"unknown Beam runner {runner!r}; choose one of "
                                   f"{', '.join(RUNNERS)}")
    if importlib.util.find_spec("apache_beam") is None:
        raise BeamUnavailableError(
            f"--runner {runner} needs Apache Beam, which is not installed: "
            "pip install 'tfmmsearch[beam]' (apache-beam[tfrecord]==2.77.0)")
