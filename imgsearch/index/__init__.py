"""Files on disk into the catalog: scan (what changed?) -> decode (worker processes, imgsearch.index.workers)
-> encode (the model runtime) -> store (one transaction per batch).

Nothing is imported here: decode workers import only imgsearch.index.workers and what it needs.
"""
