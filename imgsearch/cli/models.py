"""`imgsearch models`: the model names and pretrained tags open_clip knows."""

from __future__ import annotations

import click

from ..model.specs import DEFAULT_MODEL


@click.command()
@click.argument("name", required=False)
def models(name: str | None) -> None:
    """List open_clip models as NAME:TAG (only NAME's tags when given); the default is marked.

    Any of these works with --model; so do hf-hub:ORG/REPO and local-dir:FOLDER.
    """
    import open_clip

    for model, tag in open_clip.list_pretrained():
        if name is None or model == name:
            spec = f"{model}:{tag}"
            click.echo(f"{spec}{'  (default)' if spec == DEFAULT_MODEL else ''}")


COMMANDS = [models]
