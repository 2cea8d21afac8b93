"""Warm starts: a new run begins from an earlier model's weights instead of from scratch.

A shop retrains as new log days arrive (a feedback round); starting from yesterday's model
reaches its quality in a fraction of the steps. The earlier model may be a run directory (every
weight, the learned temperature included) or an export (a SavedModel version or a base path,
whose latest version is used): an export carries the towers, encoders and ranking head under
the names `MultimodalSearchModel.exported_parts` gives them, but not the temperature, which
then starts from the config's value. The architectures must agree; otherwise nothing is
loaded and the error says why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

from tfmmsearch.contract import resolve_version_dir
from tfmmsearch.model.build import RUN_CONFIG, RUN_WEIGHTS
from tfmmsearch.model.search_model import MultimodalSearchModel

logger = logging.getLogger(__name__)


class WarmStartError(ValueError):
    """The warm-start source is missing or does not fit the model being trained."""


def warm_start_weights(source: str | Path) -> tuple[str, bool]:
    """(checkpoint prefix to read, whether it is a run's full weights rather than an export's
    variables) of a warm-start source; WarmStartError when it is neither. Cheap: train()
    calls it before the run writes anything."""
    source = Path(source)
    if (source / RUN_CONFIG).is_file():
        weights = source / RUN_WEIGHTS
        if not Path(str(weights) + ".index").is_file():
            raise WarmStartError(f"cannot warm-start from {source}: the run has no final weights "
                                 f"({weights}.index); finish it first")
        return str(weights), True
    try:
        version = resolve_version_dir(source)
    except (FileNotFoundError, ValueError) as error:
        raise WarmStartError(f"cannot warm-start from {source}: neither a run directory "
                             f"(no {RUN_CONFIG}) nor an export ({error})") from None
    return str(version / "variables" / "variables"), False


def warm_start(model: MultimodalSearchModel, source: str | Path) -> str:
    """Loads `source`'s weights into `model` (built, heads included); returns what was read."""
    read_from, whole_run = warm_start_weights(source)
    if whole_run:
        status = _read(lambda: model.load_weights(read_from), source)
    else:
        checkpoint = tf.train.Checkpoint(**{name: part for name, part in
                                            model.exported_parts().items() if part is not None})
        status = _read(lambda: checkpoint.read(read_from), source)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise WarmStartError(f"cannot warm-start from {source}: its model does not match this "
                             f"config's architecture ({str(error).splitlines()[0][:300]})") from None
    status.expect_partial()  # optimizer slots, metric states, the export's index
    logger.info("warm start: weights read from %s", read_from)
    return read_from


def _read(read, source: Path):
    try:
        return read()
    except (tf.errors.OpError, ValueError) as error:
        raise WarmStartError(f"cannot warm-start from {source}: "
                             f"{str(error).splitlines()[0][:300]}") from None
