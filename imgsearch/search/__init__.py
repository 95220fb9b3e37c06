"""Answering from the catalog: query terms and filters, nearest neighbours through FAISS, zero-shot labels,
duplicate groups. Nothing is imported here."""
