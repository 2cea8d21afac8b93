"""What the TF-Hub text modules share: input/output names and atomic SavedModel writing.

The names follow the tfhub.dev BERT conventions, so a tower written against these modules
also runs on a real tfhub.dev preprocessor/encoder pair (and the other way round).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

INPUT_WORD_IDS = "input_word_ids"
INPUT_MASK = "input_mask"
INPUT_TYPE_IDS = "input_type_ids"
ENCODER_INPUTS = (INPUT_WORD_IDS, INPUT_MASK, INPUT_TYPE_IDS)

POOLED_OUTPUT = "pooled_output"
SEQUENCE_OUTPUT = "sequence_output"
ENCODER_OUTPUTS = "encoder_outputs"
DEFAULT_OUTPUT = "default"

VOCAB_FILENAME = "vocab.txt"


def save_atomically(out_dir: str | Path, write: Callable[[Path], None]) -> Path:
    """Runs `write(tmp_dir)` on a fresh directory next to `out_dir`, then renames it into place.

    A reader of `out_dir` (or a crash half-way) never sees a half-written SavedModel: the
    directory appears complete in one rename. An existing `out_dir` is replaced.
    """
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write(tmp_dir)
        if out_dir.exists():
            old_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old_dir / out_dir.name)
            os.replace(tmp_dir, out_dir)
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir
