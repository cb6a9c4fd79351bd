"""Publishing a run's model to the Hugging Face Hub: export with a model card, check, upload.

    mmseqrec publish checkpoints/<run> --repo-id org/name [--private]   # to the Hub
    mmseqrec.load_pretrained("org/name")                                 # back from it (any model)

The saved-model folder itself (files, Hub download, weights, cards) is ``mmseqrec.savedmodel``;
loading is ``mmseqrec.inference``. This module is an entry point (``mmseqrec publish``) on top of
both; ``HubError`` and ``load_pretrained`` are importable from here as before.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi
from huggingface_hub import constants as hub_constants

from mmseqrec.inference import load_pretrained
from mmseqrec.models import model_classes
from mmseqrec.savedmodel import CARD, MODEL_FILES, REPO_ID, HubError, explain_hub_errors, find_model_folder, model_card

__all__ = ["HubError", "export_model", "load_pretrained", "publish", "register"]


def export_model(source: str | Path, destination: Path, repo_id: str | None = None) -> Path:
    """Write the publishable folder for ``source`` (a run folder or a saved model) into
    ``destination``: the weights, config.json and a model card; checked to load back."""
    source = Path(source)
    model_dir, run_dir = find_model_folder(source)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, destination / name)
    if run_dir is not None:
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        metrics_file = run_dir / "metrics.json"
        results = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        (destination / CARD).write_text(model_card(resolved, results, repo_id, model_cls=_model_class(resolved)))
    elif (model_dir / CARD).is_file():
        shutil.copy2(model_dir / CARD, destination / CARD)
    model = load_pretrained(destination)  # what is uploaded must load back
    if not (destination / CARD).is_file():
        (destination / CARD).write_text(str(model.generate_model_card()))
    return destination


def _model_class(resolved: dict) -> type | None:
    """The model class a run's config.yaml names (None for a name this installation lacks)."""
    try:
        return model_classes(str((resolved.get("model") or {}).get("name", "")))[0]
    except ValueError:
        return None


def publish(source: str | Path, repo_id: str, private: bool = False, api: Any = None, commit_message: str | None = None) -> str:
    """Upload the exported model of ``source`` to the Hub repository ``repo_id``; return its URL.

    ``api`` is the Hub client (``huggingface_hub.HfApi()`` by default); only ``create_repo`` and
    ``upload_folder`` are called. The export is staged in a temporary folder.
    """
    if not REPO_ID.match(repo_id):
        raise ValueError(f"--repo-id {repo_id!r}: expected a Hub repository id like org/name")
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="mmseqrec-publish-") as staging:
        folder = export_model(source, Path(staging) / "export", repo_id)
        if hub_constants.HF_HUB_OFFLINE and api is None:
            raise HubError(f"cannot publish {repo_id}: HF_HUB_OFFLINE=1 is set. Unset it to upload (--dry-run exports without uploading).")
        api = api if api is not None else HfApi()
        with explain_hub_errors(repo_id, action="publish"):
            url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id, repo_type="model", folder_path=str(folder),
                commit_message=commit_message or f"Upload {source.name} with mmseqrec",
            )
    return str(url)


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------
def _cmd_publish(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if args.dry_run:
        folder = export_model(source, source / "hub-export", args.repo_id)
        print(f"exported (not uploaded) to {folder}:")
        for path in sorted(folder.iterdir()):
            print(f"  {path.name}  ({path.stat().st_size:,} bytes)")
        return 0
    url = publish(source, args.repo_id, private=args.private)
    print(f"published {source} to {url}")
    return 0


def register(commands) -> None:
    """Add ``mmseqrec publish`` to the command-line parser."""
    parser = commands.add_parser(
        "publish", help="upload a run's model (weights, config, model card) to the Hugging Face Hub",
        description="Export the model of a run folder (best/ or final/) or a saved-model folder with a model card, check "
                    "that it loads back, and upload it to a Hub model repository (created if needed). Needs a token "
                    "with write access (hf auth login, or HF_TOKEN).",
    )
    parser.add_argument("source", help="run folder (checkpoints/<run>) or saved-model folder")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. my-org/missrec-office")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", action="store_true", help="write the export to <source>/hub-export and stop before uploading")
    parser.set_defaults(func=_cmd_publish)
