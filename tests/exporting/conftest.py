"""A tiny run directory (untrained weights are enough to test export mechanics) and its export."""

from pathlib import Path

import pytest

from tfmmsearch.config import load_config, save_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_hub_cache) -> Path:
    """config.yaml + final weights of an untrained tiny model over a 60-item synthetic catalog."""
    from tfmmsearch.training.train import FINAL_WEIGHTS, build_model, build_towers, cached_inputs

    root = tmp_path_factory.mktemp("export_run")
    config = load_config(None, [
        f"data.work_dir={root / 'data'}", "data.synthetic.num_items=60", "data.image_size=64",
        f"towers.hub_cache_dir={tiny_hub_cache}", "towers.image.image_size=64",
        "model.embedding_dim=16", f"export.base_dir={root / 'export'}", "export.model_name=tiny",
        "export.top_k=10",
    ])
    run_dir = root / "run"
    run_dir.mkdir()
    save_config(config, run_dir / "config.yaml")
    towers = build_towers(config)
    model = build_model(config, towers, cached_inputs(config, towers))
    model.build_heads()
    model.save_weights(str(run_dir / FINAL_WEIGHTS))
    return run_dir


@pytest.fixture(scope="module")
def exported(tiny_run) -> Path:
    from tfmmsearch.exporting.export import export

    return export(tiny_run)
