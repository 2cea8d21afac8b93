"""A shop-like export shared by the export tests: filterable columns, hybrid retrieval, an item
feature. Built once per session; tests that change it load their own copy in process."""

import pytest

from tests.conftest import make_untrained_run

SHOP_FILTERS = "{gender: categorical, article_type: categorical, base_colour: categorical, price: numeric}"


@pytest.fixture(scope="session")
def shop_run(tmp_path_factory, tiny_hub_cache):
    # 10 candidates per list over 60 items, so which list an item came from matters.
    return make_untrained_run(tmp_path_factory.mktemp("shop"), tiny_hub_cache, [
        f"export.filters={SHOP_FILTERS}", "export.hybrid.fusion_type=rrf",
        "export.hybrid.candidates=10",
        "model.item_features=[{column: brand, kind: categorical}]"])


@pytest.fixture(scope="session")
def shop_catalog(shop_run):
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.prepare import resolve_catalog_dir
    from tfmmsearch.model.build import load_run_config

    return read_catalog(resolve_catalog_dir(load_run_config(shop_run))).products


@pytest.fixture(scope="session")
def shop_export(shop_run, shop_catalog, tmp_path_factory):
    """Version 1 of an export of the first 20 products."""
    from tfmmsearch.exporting.export import export

    return export(shop_run, base_dir=tmp_path_factory.mktemp("shop_export") / "shop",
                  products=shop_catalog[:20])
