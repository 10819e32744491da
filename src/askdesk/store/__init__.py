"""The index: a folder of segments (vectors, records, BM25 postings) with selections, merges and an
atomic writer (build, index, segment, selection, merge, records, folder_snapshot, vectors, lexical),
or a Milvus store behind the same seams (milvus, milvus_collections, milvus_snapshot, milvus_write,
milvus_rollback, milvus_lock, upsert), and the Ray Data embedding job (rayjob).

May import: articles (statements are found when an article is indexed), models, and the shared
modules. Never answering, Desk or surface.
"""
