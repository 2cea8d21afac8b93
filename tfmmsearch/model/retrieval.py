"""Retrieval loss with in-batch negatives drawn from the *global* batch.

`tfrs.tasks.Retrieval` scores each query against the candidates of its own replica only
(TFRS issue #561), so adding replicas silently shrinks the softmax. Here every replica
gathers the item embeddings of all replicas and rotates them so its own candidates come
first; TFRS's diagonal labels then still point at the right positives, and the summed
per-replica losses equal the single-replica loss on the same global batch.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfmmsearch.model.grades import attribute_grades


def gather_from_replicas(*tensors: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """All replicas' rows of each tensor, this replica's rows first (identity on one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    local_rows = tf.shape(tensors[0])[0]
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
    gathered = []
    for tensor in tensors:
        # tf.identity gives raw input tensors a device, which multi-worker collectives need.
        everything = context.all_gather(tf.identity(tensor), axis=0)
        gathered.append(tf.roll(everything, shift=-replica_id * local_rows, axis=0))
    return tuple(gathered)


def num_replicas() -> int:
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


class GlobalBatchRetrieval(tf.keras.layers.Layer):
    """In-batch softmax retrieval over the global batch, averaged over global queries.

    Options mirror what production retrieval needs: a (learnable) temperature applied by the
    caller through `temperature`, logQ correction from item sampling probabilities, removal of
    accidental hits (the same product appearing as a negative), optional score masks (e.g.
    other relevant items in the batch) and hard-negative mining.
    """

    def __init__(self, remove_accidental_hits: bool = True, logq_correction: bool = True,
                 num_hard_negatives: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.logq_correction = logq_correction
        self.remove_accidental_hits = remove_accidental_hits
        self.task = tfrs.tasks.Retrieval(
            remove_accidental_hits=remove_accidental_hits,
            num_hard_negatives=num_hard_negatives,
            metrics=None,
            batch_metrics=None,
        )

    def call(self, query_embeddings, candidate_embeddings, candidate_ids, temperature,
             sampling_probability=None, query_attributes=None, candidate_attributes=None,
             query_ids=None, sample_weight=None):
        """Mean (weighted) loss per global query. With attributes, other grade-2 items are not
        negatives; with `query_ids` (the pair's query), nor are other pairs' items of the same
        query (another product bought for the same search)."""
        if candidate_ids.dtype == tf.string:  # collectives cannot gather strings: fingerprint them
            candidate_ids = tf.strings.to_hash_bucket_fast(candidate_ids, 2**62)
        candidates, ids = gather_from_replicas(candidate_embeddings, candidate_ids)
        probabilities = None
        if self.logq_correction and sampling_probability is not None:
            (probabilities,) = gather_from_replicas(sampling_probability)
        relevant = None
        if query_attributes is not None and candidate_attributes is not None:
            (all_attributes,) = gather_from_replicas(candidate_attributes)
            relevant = tf.equal(attribute_grades(query_attributes, all_attributes), 2)
        if query_ids is not None:
            (all_query_ids,) = gather_from_replicas(query_ids)
            same_query = tf.equal(query_ids[:, None], all_query_ids[None, :])
            relevant = same_query if relevant is None else tf.logical_or(relevant, same_query)
        score_mask = None
        if relevant is not None:
            own = tf.cast(tf.eye(tf.shape(query_embeddings)[0], tf.shape(candidates)[0]), tf.bool)
            score_mask = tf.logical_or(own, tf.logical_not(relevant))
        loss = self.task(
            query_embeddings / temperature,
            candidates,
            sample_weight=sample_weight,
            candidate_ids=ids if self.remove_accidental_hits else None,
            candidate_sampling_probability=probabilities,
            score_mask=score_mask,
            compute_metrics=False,
            compute_batch_metrics=False,
        )
        global_queries = tf.cast(tf.shape(query_embeddings)[0] * num_replicas(), loss.dtype)
        return loss / global_queries
