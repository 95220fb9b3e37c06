"""`imgsearch save-model`: a model from the Hugging Face cache into a local-dir: folder, for offline use."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("save-model")
@click.argument("model")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--download", is_flag=True, help="Download from the hub what the cache lacks.")
def save_model(model: str, folder: Path, download: bool) -> None:
    """Copy MODEL (NAME:TAG or hf-hub:ORG/REPO) from the Hugging Face cache into FOLDER, as a folder that
    --model local-dir:FOLDER loads offline: open_clip's config and weights, the tokenizer files, and a
    Hugging Face text tower's config.json.

    \b
      imgsearch save-model ViT-B-16-SigLIP:webli ~/models/siglip
      imgsearch save-model nllb-clip-base:v1 /mnt/usb/nllb --download
    """
    from ..model.local_dir import save_local_dir
    from ..model.specs import parse_model_spec

    saved = save_local_dir(parse_model_spec(model), folder, download)
    for name, source in saved.files:
        click.echo(f"{name}  (from {source})")
    click.echo(
        f"saved {len(saved.files)} files, {saved.bytes / 1e6:.1f} MB: use --model local-dir:{saved.folder}"
    )


COMMANDS = [save_model]
