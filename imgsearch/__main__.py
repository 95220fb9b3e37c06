"""`python -m imgsearch` is the `imgsearch` command."""

from .cli import run

if __name__ == "__main__":
    run()
