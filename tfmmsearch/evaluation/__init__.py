"""Search quality evaluation: protocol metrics, a BM25-over-titles baseline, task evaluators, tables.

`metrics` turns scores (or exported top-k ids) and graded relevance into NDCG/Recall/MRR,
`protocol` runs the three tasks of benchmark/PROTOCOL.md (full, image_only, title_to_image)
for any `SearchSystem`, with BM25 over titles (`tfmmsearch.data.bm25`) as the lexical
baseline every learned system must beat, `judged` scores a shop's human-judged queries the
same way, and `report` prints the results. Pure numpy: nothing here imports TensorFlow.
"""
