"""`imgsearch serve`: the web page and JSON API over one warm Library (see app.py).

Nothing is imported here, so `imgsearch.serve.info` (read by command-line clients) stays cheap.
"""
