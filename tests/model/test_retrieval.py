"""Global-batch retrieval: hand-computed loss on a 2x2 example, and equality across replicas."""

import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from tfmmsearch.model.retrieval import GlobalBatchRetrieval


def _softmax_xent(logits, label):
    logits = np.asarray(logits, np.float64)
    return -(logits[label] - np.log(np.exp(logits).sum()))


def test_loss_matches_hand_computation_on_2x2():
    queries = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    items = tf.constant([[0.6, 0.8], [1.0, 0.0]])
    task = GlobalBatchRetrieval(remove_accidental_hits=False, logq_correction=False)
    loss = float(task(queries, items, tf.constant(["a", "b"]), temperature=0.5))
    # scores / T: q0 -> [1.2, 2.0], q1 -> [1.6, 0.0]; positives on the diagonal.
    expected = (_softmax_xent([1.2, 2.0], 0) + _softmax_xent([1.6, 0.0], 1)) / 2
    assert abs(loss - expected) < 1e-5


def test_accidental_hits_and_logq_change_the_loss_as_expected():
    queries = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    items = tf.constant([[0.6, 0.8], [1.0, 0.0]])
    ids = tf.constant(["same", "same"])
    task = GlobalBatchRetrieval(remove_accidental_hits=True, logq_correction=False)
    # Both candidates are the same product: each query's only negative is removed -> loss 0.
    assert float(task(queries, items, ids, temperature=1.0)) < 1e-6

    logq = GlobalBatchRetrieval(remove_accidental_hits=False, logq_correction=True)
    probs = tf.constant([0.5, 0.25])
    loss = float(logq(queries, items, tf.constant(["a", "b"]), 1.0, sampling_probability=probs))
    corrected = lambda row: np.asarray(row) - np.log([0.5, 0.25])  # noqa: E731
    expected = (_softmax_xent(corrected([0.6, 1.0]), 0) + _softmax_xent(corrected([0.8, 0.0]), 1)) / 2
    assert abs(loss - expected) < 1e-5


def test_hard_negative_mining_keeps_only_the_hardest_negatives():
    queries = tf.constant([[1.0, 0.0]])
    items = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.0]])
    task = GlobalBatchRetrieval(remove_accidental_hits=False, logq_correction=False, num_hard_negatives=1)
    loss = float(task(queries, items, tf.constant(["a", "b", "c", "d"]), 1.0))
    # Scores [1, 0, 0.5, -1]: the positive plus the single hardest negative (0.5).
    assert abs(loss - _softmax_xent([1.0, 0.5], 0)) < 1e-5


def test_other_relevant_items_are_not_negatives():
    queries = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    items = tf.constant([[0.6, 0.8], [1.0, 0.0]])
    task = GlobalBatchRetrieval(remove_accidental_hits=False, logq_correction=False)
    # Query 0 names type 7 only; item 1 is also type 7 -> grade 2, so it is masked for query 0.
    q_attr = tf.constant([[7, -1, -1, -1], [8, -1, -1, -1]])
    i_attr = tf.constant([[7, 1, 1, 1], [7, 2, 2, 2]])
    loss = float(task(queries, items, tf.constant(["a", "b"]), 1.0,
                      query_attributes=q_attr, candidate_attributes=i_attr))
    expected = (0.0 + _softmax_xent([0.8, 0.0], 1)) / 2
    assert abs(loss - expected) < 1e-5


MULTI_REPLICA_SCRIPT = textwrap.dedent("""
    import os, json
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfmmsearch.model.retrieval import GlobalBatchRetrieval

    rng = np.random.default_rng(0)
    queries = rng.normal(size=(8, 4)).astype("float32")
    items = rng.normal(size=(8, 4)).astype("float32")
    ids = np.array([b"p%d" % (i % 6) for i in range(8)])
    probs = rng.uniform(0.1, 0.9, size=8).astype("float32")

    def loss_fn(task, q, c, i, p):
        return task(q, c, i, 0.3, sampling_probability=p)

    single = float(loss_fn(GlobalBatchRetrieval(), queries, items, ids, probs))

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        task = GlobalBatchRetrieval()
    dataset = tf.data.Dataset.from_tensor_slices((queries, items, ids, probs)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    per_replica = strategy.run(lambda q, c, i, p: loss_fn(task, q, c, i, p), args=batch)
    summed = float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
    local = [float(v) for v in strategy.experimental_local_results(per_replica)]
    print(json.dumps({"single": single, "summed": summed, "replicas": strategy.num_replicas_in_sync,
                      "local": local}))
""")


def test_two_replica_loss_equals_single_replica_loss_on_the_global_batch(tmp_path):
    script = tmp_path / "multi_replica.py"
    script.write_text(MULTI_REPLICA_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["replicas"] == 2
    assert abs(numbers["summed"] - numbers["single"]) < 1e-5, numbers
    # Each replica alone must not be the whole loss: both contributed.
    assert all(value > 0 for value in numbers["local"])
