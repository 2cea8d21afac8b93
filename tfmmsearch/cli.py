"""`tfmmsearch` command line: a thin layer over the Python entrypoints.

Every subcommand parses arguments, loads the config (YAML + `--set key=value` overrides),
calls one documented function, and prints where its outputs went. Heavy imports happen
inside the handlers so that `tfmmsearch --help` answers instantly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tfmmsearch.config import ConfigError, load_config
from tfmmsearch.exporting.errors import ExportBusyError  # no TensorFlow import
from tfmmsearch.logs import setup_logging
from tfmmsearch.serving.errors import ServingError  # no heavy imports: errors.py imports nothing

logger = logging.getLogger("tfmmsearch")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
QUERY_TIMEOUT = 10.0  # seconds; tfmmsearch.serving.client.DEFAULT_TIMEOUT (not imported: it loads numpy)


def _add_config_args(parser: argparse.ArgumentParser, default: Path | None = None) -> None:
    parser.add_argument("--config", type=Path, default=default,
                        help="YAML experiment config" + (f" (default: {default.name})" if default else ""))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.batch_size=64 (repeatable)")


def _config(args):
    config_path = args.config
    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    return load_config(config_path, args.overrides)


# --------------------------------------------------------------------------- handlers


def _cmd_demo(args) -> int:
    from tfmmsearch.demo import run_demo

    run_demo(_config(args))
    return 0


def _cmd_train(args) -> int:
    from tfmmsearch.training.train import train

    result = train(_config(args), args.out, warm_start=args.warm_start)
    if result.already_complete:
        print(f"\n{result.run_dir} is already complete: nothing to train (use a new --out to "
              "train again)")
    else:
        print(f"\ntrained in {result.seconds:.0f} s; run directory: {result.run_dir}")
    for name, value in result.validation.items():
        print(f"  {name}: {value:.4f}")
    print(f"TensorBoard: tensorboard --logdir {result.run_dir / 'logs'} --host 127.0.0.1")
    return 0


def _cmd_evaluate(args) -> int:
    from tfmmsearch.evaluation.evaluate import evaluate

    evaluate(args.run, split=args.split, max_queries=args.max_queries,
             title_to_image_queries=args.max_queries, judgments=args.judgments,
             judgments_only=args.judgments_only)
    return 0


def _cmd_export(args) -> int:
    from tfmmsearch.exporting.export import export

    version_dir = export(args.run, catalog_dir=args.catalog, base_dir=args.base, top_k=args.top_k)
    print(f"exported {version_dir}")
    print(f"inspect it: saved_model_cli show --dir {version_dir} --all")
    return 0


def _cmd_index(args) -> int:
    embed_with = _beam_embed_with(args)  # first: a bad --runner is refused before any loading
    from tfmmsearch.exporting.export import read_update_catalog, update_index
    from tfmmsearch.exporting.updates import IndexUpdate, read_ids_file, read_patch_file

    changes = (args.upsert, args.delete, args.patch)
    if (args.catalog is None) == all(change is None for change in changes):
        raise ValueError("index: give --catalog (the whole new catalog), or any of --upsert, "
                         "--delete and --patch (changes to the indexed one)")
    # Files are read (and their errors reported) before the export loads.
    delete = read_ids_file(args.delete) if args.delete else []
    patch = read_patch_file(args.patch) if args.patch else {}

    def update_of(filters):
        if args.catalog is not None:
            return IndexUpdate(catalog=read_update_catalog(args.catalog, args.on_bad_row, filters))
        upsert = (read_update_catalog(args.upsert, args.on_bad_row, filters)
                  if args.upsert else [])
        return IndexUpdate(upsert=upsert, delete=delete, patch=patch)

    version_dir, report = update_index(args.model, update_of, embed_with=embed_with,
                                       rebuild_lists=args.rebuild_lists)
    print(f"indexed into {version_dir}: {report.summary()}")
    return 0


def _beam_embed_with(args):
    """`update_index`'s embedder for --runner (None: in process); mistakes are ValueErrors."""
    if args.runner is None:
        if args.pipeline_options or args.embeddings_dir is not None:
            given = "--embeddings-dir" if args.embeddings_dir is not None else "pipeline options"
            raise ValueError(f"index: {given} only apply to a Beam run; add --runner "
                             "DirectRunner (or FlinkRunner, SparkRunner, DataflowRunner)")
        return None
    from tfmmsearch.exporting.beam_options import BeamEmbedOptions, check_runner

    check_runner(args.runner)  # before importing Beam: an unknown name or no Beam, one line
    from tfmmsearch.exporting.beam_embedding import beam_embedder

    return beam_embedder(BeamEmbedOptions(
        runner=args.runner, pipeline_args=tuple(args.pipeline_options),
        embeddings_dir=args.embeddings_dir, batch_size=args.batch_size,
        on_bad_row=args.on_bad_row))


def _cmd_query(args) -> int:
    from tfmmsearch.serving.query import run_query

    run_query(args.target, args.queries, model_name=args.model_name, transport=args.transport,
              k=args.k, catalog_dir=args.catalog, signature=args.signature, timeout=args.timeout,
              filter_text=args.filter)
    return 0


def _cmd_data_prepare(args) -> int:
    from tfmmsearch.data.prepare import prepare_data

    prepared = prepare_data(_config(args))
    print(f"prepared data written to {prepared.work_dir}")
    return 0


def _cmd_data_validate(args) -> int:
    from tfmmsearch.data.catalog import read_catalog

    catalog = read_catalog(args.catalog, on_bad_row=args.on_bad_row, progress=True)
    print(f"{catalog.source}: {catalog.report.summary()}")
    for example in catalog.report.examples:
        print(f"  skipped: {example}")
    return 0


def _field_mapping(pairs: list[str]) -> dict[str, str]:
    """`--field LOG_NAME=OUR_NAME` options -> the reader's mapping."""
    mapping = {}
    for pair in pairs:
        theirs, sep, ours = pair.partition("=")
        if not sep or not theirs.strip() or not ours.strip():
            raise ValueError(f"--field {pair}: expected LOG_NAME=OUR_NAME, e.g. sid=session_id")
        mapping[theirs.strip()] = ours.strip()
    return mapping


def _cmd_data_validate_log(args) -> int:
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.search_log import DEFAULT_SPLIT, read_search_log, split_by_time

    fields = _field_mapping(args.fields)
    product_ids = None
    if args.catalog is not None:
        catalog = read_catalog(args.catalog, on_bad_row=args.on_bad_row, check_images=False)
        product_ids = [product.product_id for product in catalog.products]
        print(f"catalog {catalog.source}: {len(product_ids)} product ids")
    log = read_search_log(args.log, product_ids=product_ids, on_bad_row=args.on_bad_row,
                          progress=True, fields=fields)
    print(f"{log.source}: {log.report.summary()}")
    for example in log.report.examples:
        print(f"  skipped: {example}")
    days = log.days()
    print(f"days covered: {len(days)} ({days[0]} to {days[-1]}, UTC)")
    split = split_by_time(log)
    shares = "/".join(f"{100 * f:g}" for f in DEFAULT_SPLIT)
    print(f"time split {shares} on UTC day boundaries:")
    for name, sessions in split.splits().items():
        span = split.days[name]
        when = f"{len(span)} days, {span[0]} to {span[-1]}" if span else "0 days"
        print(f"  {name:10s} {len(sessions):7d} sessions ({when})")
    if split.unseen_query_share is None:
        print("unseen-query share: n/a (the test split is empty)")
    else:
        unseen = round(split.unseen_query_share * len(split.test))
        print(f"unseen-query share: {split.unseen_query_share:.3f} ({unseen} of {len(split.test)} "
              "test sessions have a query no training session typed)")
    return 0


def _cmd_data_synthesize(args) -> int:
    from tfmmsearch.data.catalog import read_catalog
    from tfmmsearch.data.synthetic import generate_synthetic_catalog
    from tfmmsearch.data.synthetic_log import SEARCH_LOG_FILE, generate_synthetic_search_log

    if args.search_log_sessions < 0:  # refused before minutes of drawing, not after
        raise ValueError(f"--search-log-sessions must be >= 0, got {args.search_log_sessions}")
    out = generate_synthetic_catalog(args.out, num_items=args.num_items, seed=args.seed,
                                     image_size=args.image_size)
    print(f"synthetic catalog of {args.num_items} items written to {out}")
    if args.search_log_sessions:
        products = read_catalog(out, check_images=False).products
        log = generate_synthetic_search_log(products, out / SEARCH_LOG_FILE,
                                            num_sessions=args.search_log_sessions, seed=args.seed)
        print(f"synthetic search log of {args.search_log_sessions} sessions written to {log}")
    return 0


def _cmd_hub_list(args) -> int:
    from tfmmsearch.hub.registry import BUNDLES, _bundle_components, default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    print(f"hub cache: {cache_dir}")
    for bundle in BUNDLES.values():
        built = _bundle_components(Path(cache_dir) / bundle.name) is not None
        state = "built" if built else "not built"
        print(f"  {bundle.name:20s} [{state:9s}] {bundle.description}")
        print(f"  {'':20s} handles: {', '.join(bundle.components)}")
    return 0


def _cmd_hub_build(args) -> int:
    from tfmmsearch.hub.registry import build_bundle

    for name in args.bundles:
        components = build_bundle(name, args.cache_dir, force=args.force)
        for handle, path in components.items():
            print(f"{handle}: {path}")
    return 0


# --------------------------------------------------------------------------- parser


def _at_least_one(text: str) -> int:
    """argparse type for -k: an integer >= 1 (0 or -2 would print nothing, or all but 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"k must be >= 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    """argparse type for --timeout: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timeout must be a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"timeout must be positive seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmmsearch",
        description="Multimodal (text + image) product search: data, TF-Hub towers, training, "
                    "export for TensorFlow Serving.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help="run the main job end to end on the embedded synthetic catalog",
                               description="Generates the synthetic catalog, validates it, splits it, "
                                           "generates attribute queries and builds the TFDS shards.")
    _add_config_args(demo, DEFAULT_CONFIG)
    demo.set_defaults(handler=_cmd_demo)

    train = commands.add_parser(
        "train", help="train the multimodal model (rerun the same command to resume)",
        description="Trains retrieval + alignment + ranking into RUN_DIR: checkpoints, TensorBoard "
                    "logs, metrics.json. After a crash, rerunning the same command resumes from "
                    "RUN_DIR/backup (at the epoch and step it reached). A rerun with a different "
                    "config is refused, naming the changed keys; a finished run is left as it is.")
    _add_config_args(train, DEFAULT_CONFIG)
    train.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory")
    train.add_argument("--warm-start", type=Path, default=None, metavar="RUN_DIR_OR_EXPORT",
                       help="start from an earlier run's (or export's) weights, e.g. a feedback "
                            "round on newer log days (data.search_log.train_from)")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help="protocol tasks (full, image_only, title_to_image) with BM25 and ablation rows",
        description="Scores BM25 and the trained model's rows on the protocol tasks of a split, "
                    "written to RUN_DIR/evaluation-<split>.{md,json}. With --judgments, the same "
                    "rows also score a file of human-judged queries over the run's whole catalog "
                    "(every split), written to evaluation-<split>-judged.{md,json}, or to "
                    "evaluation-judged.{md,json} with --judgments-only.")
    evaluate.add_argument("--run", type=Path, required=True, metavar="RUN_DIR", help="a trained run")
    evaluate.add_argument("--split", default="test", choices=("train", "validation", "test"))
    evaluate.add_argument("--max-queries", type=int, default=500,
                          help="sample this many queries (and title_to_image queries); default 500")
    evaluate.add_argument("--judgments", type=Path, default=None, metavar="FILE",
                          help='judged queries, JSONL: {"query": "...", "judgments": '
                               '{"<product_id>": grade}} per line, grades integers >= 0')
    evaluate.add_argument("--judgments-only", action="store_true",
                          help="score only the judged queries (no attribute protocol tasks, so "
                               "the catalog needs no attribute columns)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    export = commands.add_parser(
        "export", help="write a new TF Serving version export/<name>/<version>/ with an in-graph index")
    export.add_argument("--run", type=Path, required=True, metavar="RUN_DIR", help="a trained run")
    export.add_argument("--catalog", type=Path, default=None,
                        help="catalog to index (default: the run's catalog)")
    export.add_argument("--base", type=Path, default=None,
                        help="model base path (default: export.base_dir/export.model_name of the run)")
    export.add_argument("--top-k", type=int, default=None, help="results per query (default: config)")
    export.set_defaults(handler=_cmd_export)

    index = commands.add_parser(
        "index", help="change the latest export's catalog and write the next version (no "
                      "retraining; only new or changed products are embedded)",
        description="Give --catalog to index a whole catalog, or any of --upsert, --delete and "
                    "--patch to change the indexed one (applied in that order: delete, upsert, "
                    "patch). Products whose title, image and item features are unchanged keep "
                    "their stored vectors.")
    index.add_argument("--model", type=Path, required=True,
                       help="model base path, e.g. export/demo (its latest version embeds), or one "
                            "version directory, e.g. export/demo/3; the new version goes beside it")
    index.add_argument("--catalog", type=Path, default=None,
                       help="catalog directory: the new version indexes exactly its products")
    index.add_argument("--upsert", type=Path, default=None, metavar="CATALOG",
                       help="catalog directory of products to add or replace; others stay")
    index.add_argument("--delete", type=Path, default=None, metavar="IDS_FILE",
                       help="text file of product ids to remove, one per line")
    index.add_argument("--patch", type=Path, default=None, metavar="FILE",
                       help="JSONL or CSV rows {product_id, COLUMN: value} changing filterable "
                            "columns (export.filters) without re-embedding")
    index.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                       help="stop at the first bad catalog row, or skip and count bad rows "
                            "(with --runner also rows a worker cannot read or embed)")
    index.add_argument("--rebuild-lists", action="store_true",
                       help="an IVF index (export.index.type: ivf) learns new k-means centroids "
                            "from the updated catalog; without it new products join their "
                            "nearest lists and the log says when the lists have drifted")
    beam = index.add_argument_group(
        "Apache Beam (large catalogs)",
        "With --runner, new and changed products are embedded by a Beam pipeline (RunInference "
        "over the export's index_outputs, batched) into sharded TFRecords, and the index is "
        "built from them. Everything after a bare -- goes to Beam as pipeline options, e.g. "
        "`tfmmsearch index --model export/demo --catalog DIR --runner DirectRunner -- "
        "--direct_num_workers=2 --direct_running_mode=multi_processing`, or for Dataflow "
        "`-- --project=P --region=R --temp_location=gs://B/tmp`. Workers read the images at "
        "the catalog's paths, so a cluster needs them on shared storage.")
    beam.add_argument("--runner", default=None, metavar="RUNNER",
                      help="DirectRunner, FlinkRunner, SparkRunner or DataflowRunner (default: "
                           "embed in this process)")
    beam.add_argument("--embeddings-dir", default=None, metavar="DIR",
                      help="where the work list, the TFRecord shards and the bad rows go, kept "
                           "afterwards (a path every worker can write, e.g. gs://B/emb for "
                           "Dataflow; default: a temporary directory beside the export, "
                           "removed once the index is built)")
    beam.add_argument("--batch-size", type=int, default=64, metavar="N",
                      help="items per index_outputs call on a worker (default 64)")
    beam.add_argument("pipeline_options", nargs="*", metavar="-- BEAM_OPTION",
                      help="Beam pipeline options, after a bare --")
    index.set_defaults(handler=_cmd_index)

    query = commands.add_parser(
        "query", help="search an export directory or a running TF Serving (REST/gRPC)")
    query.add_argument("target", help="export base path or version dir, http://host:8501 (REST), "
                                      "or host:8500 (gRPC)")
    query.add_argument("queries", nargs="+", help="query strings")
    query.add_argument("--model-name", default=None, help="served model name (default: tfmmsearch)")
    query.add_argument("--transport", choices=("auto", "local", "rest", "grpc"), default="auto",
                       help="auto (default): a directory is local, http(s):// is REST, host:port is gRPC")
    query.add_argument("--signature", default="serving_default", choices=("serving_default", "retrieve"))
    query.add_argument("--filter", default=None, metavar="FILTER",
                       help="only products matching this filter, e.g. 'gender:Men AND "
                            "price:[* TO 1500]' (the export's filterable columns; syntax in "
                            "the README)")
    query.add_argument("-k", type=_at_least_one, default=5, help="results to print per query (>= 1)")
    query.add_argument("--timeout", type=_positive_seconds, default=QUERY_TIMEOUT, metavar="SECONDS",
                       help=f"give up on a call after this many seconds (default: {QUERY_TIMEOUT:g})")
    query.add_argument("--catalog", type=Path, default=None, help="catalog to print titles from")
    query.set_defaults(handler=_cmd_query)

    data = commands.add_parser("data", help="catalog tools: validate, validate-log, synthesize, prepare")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_commands.required = True
    validate = data_commands.add_parser("validate", help="read and validate a catalog directory")
    validate.add_argument("catalog", type=Path, help="directory with products.csv or products.jsonl")
    validate.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                          help="stop at the first bad row, or skip and count bad rows")
    validate.set_defaults(handler=_cmd_data_validate)
    validate_log = data_commands.add_parser(
        "validate-log", help="read and validate a search log; show its days and its time split",
        description="Validates a search log (.jsonl, or .csv with space-separated id lists) and "
                    "prints the read report, the days it covers, the sessions per split of the "
                    "default 80/10/10 time split (whole UTC days) and the share of test "
                    "sessions whose query never occurs in training.")
    validate_log.add_argument("log", type=Path, help="search_log.jsonl or search_log.csv")
    validate_log.add_argument("--catalog", type=Path, default=None,
                              help="catalog directory: product ids it lacks are bad sessions "
                                   "(its images are not decoded; `data validate` checks them)")
    validate_log.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                              help="stop at the first bad session (and catalog row), or skip and "
                                   "count them")
    validate_log.add_argument("--field", dest="fields", action="append", default=[],
                              metavar="LOG_NAME=OUR_NAME",
                              help="the log calls one of session_id, timestamp, query, shown, "
                                   "clicked, purchased otherwise, e.g. --field sid=session_id "
                                   "(repeatable)")
    validate_log.set_defaults(handler=_cmd_data_validate_log)
    synth = data_commands.add_parser("synthesize", help="write a synthetic catalog (drawn images, grammar titles)")
    synth.add_argument("out", type=Path, help="output catalog directory")
    synth.add_argument("--num-items", type=int, default=2000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--search-log-sessions", type=int, default=0, metavar="N",
                       help="also write search_log.jsonl into the catalog: N sessions of a "
                            "simulated shop whose old search was BM25 over titles (default 0: "
                            "no log)")
    synth.set_defaults(handler=_cmd_data_synthesize)
    prepare = data_commands.add_parser("prepare", help="validate, split and generate queries for a config")
    _add_config_args(prepare, DEFAULT_CONFIG)
    prepare.set_defaults(handler=_cmd_data_prepare)

    hub = commands.add_parser("hub", help="offline TF-Hub modules: list and build")
    hub_commands = hub.add_subparsers(dest="hub_command", metavar="ACTION")
    hub_commands.required = True
    hub_list = hub_commands.add_parser("list", help="list the modules this package builds offline")
    hub_list.add_argument("--cache-dir", type=Path, default=None,
                          help="hub cache (default: $TFMMSEARCH_HUB_CACHE or ~/.cache/tfmmsearch/hub)")
    hub_list.set_defaults(handler=_cmd_hub_list)
    hub_build = hub_commands.add_parser("build", help="build modules into the hub cache (idempotent)")
    hub_build.add_argument("bundles", nargs="+", metavar="BUNDLE",
                           help="tiny-bert, tiny-image, minilm-l6, efficientnet-lite0")
    hub_build.add_argument("--cache-dir", type=Path, default=None,
                           help="hub cache (default: $TFMMSEARCH_HUB_CACHE or ~/.cache/tfmmsearch/hub)")
    hub_build.add_argument("--force", action="store_true", help="rebuild even if already built")
    hub_build.set_defaults(handler=_cmd_hub_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"tfmmsearch: config error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, ServingError, ExportBusyError) as error:
        print(f"tfmmsearch: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
