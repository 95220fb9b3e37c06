"""Storage: the SQLite catalog (the truth, vectors included) and the FAISS index derived from it."""
