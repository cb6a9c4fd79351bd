"""A saved model's folder: its files, fetching it from the Hugging Face Hub, loading its weights,
its model card.

A saved model is a folder with ``model.safetensors``, ``config.json`` (the model's config plus
``model_type``, its name in ``MODELS``) and ``README.md``, a model card whose YAML header holds
the metadata (library, tags, training domains, evaluation results as ``model-index``) and whose
text records the configuration, the training data (domains, counts, feature encoders), the
evaluation table and the command that produced the model. Every finished run writes one
(``best/`` for fine-tuning, ``final/`` for pretraining).

This module sits below the models (``models/base.py`` saves and loads through it) and knows
none of them: the model class, where a card needs it, is passed in. Building a model from a
folder by its ``model_type`` is ``mmseqrec.inference.load_pretrained``; publishing is
``mmseqrec.hub``.

Every Hub access goes through ``huggingface_hub`` (``snapshot_download``), so the usual
environment applies (``HF_TOKEN``, ``HF_HOME``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``). Hub
failures (offline, unreachable, not found, not allowed) become a ``HubError`` with one clear
sentence; the command-line entry points print it without a stack trace.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData, snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

MODEL_FILES = ("model.safetensors", "config.json")
CARD = "README.md"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
METRIC_ORDER = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")


class HubError(RuntimeError):
    """The Hugging Face Hub could not be used (offline, unreachable, not found, not allowed)."""


# -------------------------------------------------------------------------------------------
# Loading
# -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def explain_hub_errors(repo_id: str, action: str = "download"):
    """Turn huggingface_hub's (and the network's) exceptions into one ``HubError`` sentence."""
    try:
        import httpx

        network_errors: tuple[type[BaseException], ...] = (httpx.HTTPError, ConnectionError)
    except ImportError:  # huggingface_hub < 1.0 used requests
        network_errors = (ConnectionError,)
    where = f"the Hugging Face Hub ({hub_constants.ENDPOINT})"
    try:
        yield
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as err:
        if hub_constants.HF_HUB_OFFLINE or isinstance(err, OfflineModeIsEnabled):
            raise HubError(
                f"cannot {action} {repo_id}: HF_HUB_OFFLINE=1 is set"
                + (f" and {repo_id} is not in the local cache ({hub_constants.HF_HUB_CACHE})" if action == "download" else "")
                + ". Unset HF_HUB_OFFLINE on a machine with network access, or use a local folder."
            ) from None
        raise HubError(
            f"cannot {action} {repo_id}: {where} could not be reached and no cached copy exists "
            f"({_first_line(err)}). Check the network (or HF_ENDPOINT), or use a local folder."
        ) from None
    except GatedRepoError:
        raise HubError(f"cannot {action} {repo_id}: the repository is gated; request access on the Hub, then log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise HubError(
            f"cannot {action} {repo_id}: no such model repository on {where}, or it is private and you are not "
            "logged in (hf auth login / HF_TOKEN). A local folder of that name does not exist either."
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"cannot {action} {repo_id}: the requested revision does not exist") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", "an error")
        hint = " (log in with hf auth login, or set HF_TOKEN to a token with write access)" if status in (401, 403) else ""
        raise HubError(f"cannot {action} {repo_id}: {where} answered {status}: {_first_line(err)}{hint}") from None
    except network_errors as err:
        raise HubError(f"cannot {action} {repo_id}: {where} could not be reached ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def resolve_model_folder(
    source: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local folder holding a saved model: ``source`` itself, or the Hub repository
    ``source`` ("org/name") downloaded into (or found in) the Hugging Face cache."""
    path = Path(source)
    if path.exists():
        missing = [name for name in MODEL_FILES if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is not a saved model: {' and '.join(missing)} missing")
        return path
    if not REPO_ID.match(str(source)):
        raise FileNotFoundError(f"{source}: no such folder, and not a Hub repository id (org/name)")
    with explain_hub_errors(str(source)):
        folder = Path(
            snapshot_download(
                repo_id=str(source), revision=revision, cache_dir=cache_dir, force_download=force_download,
                token=token, local_files_only=local_files_only, allow_patterns=[*MODEL_FILES, CARD],
            )
        )
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise HubError(f"{source} on the Hub is not an mmseqrec model: {' and '.join(missing)} missing")
    return folder


def load_weights_into(model, weights: Path, strict: bool = True, device: str = "cpu") -> None:
    """Load ``weights`` (safetensors) into ``model``; with ``strict``, every tensor must match."""
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=device)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{weights} does not fit {type(model).__name__} with its config.json: {err}") from None
    if strict and (missing or unexpected):
        raise ValueError(
            f"{weights} does not match {type(model).__name__}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def find_model_folder(source: Path) -> tuple[Path, Path | None]:
    """(model folder, run folder or None) for a run folder or a saved-model folder."""
    if (source / "config.yaml").is_file():
        for name in ("best", "final"):
            if all((source / name / f).is_file() for f in MODEL_FILES):
                return source / name, source
        raise FileNotFoundError(f"{source} is a run folder without a finished model (no best/ or final/ with {' and '.join(MODEL_FILES)})")
    if all((source / f).is_file() for f in MODEL_FILES):
        return source, None
    raise FileNotFoundError(f"{source} is neither a run folder (config.yaml) nor a saved model ({' and '.join(MODEL_FILES)})")


# -------------------------------------------------------------------------------------------
# Model cards
# -------------------------------------------------------------------------------------------
def model_card(resolved: dict, results: dict | None, repo_id: str | None = None, model_cls: type | None = None) -> str:
    """The README.md of a run's model: YAML metadata, then what it is, what it was trained on,
    how it scored and how it was made. ``resolved`` is the run's config.yaml, ``results`` its
    metrics.json, ``model_cls`` the model's class (its ``model_type`` and Hub tags; without it the
    type is the lower-cased class name of ``resolved`` and the card has the generic tags only)."""
    results = results or {}
    model_section = dict(resolved.get("model") or {})
    class_name = str(model_section.pop("name", "model"))
    model_type = getattr(model_cls, "model_type", None) or class_name.lower()
    train = resolved.get("train") or {}
    stage = train.get("stage")  # None: saved outside a training run
    summary = resolved.get("data_summary") or {}
    domains = summary.get("domains") or []
    domain_names = [str(d.get("name")) for d in domains] or ([str(results["domain"])] if results.get("domain") else [])
    pretraining = stage == "pretrain"
    what = "pretrained on" if pretraining else ("fine-tuned (parameter-efficient) on" if stage == "peft" else "trained on")
    title = f"{class_name} {what} {', '.join(domain_names)}" if domain_names else class_name
    reference = repo_id or "<org/name or local folder>"

    info = getattr(model_cls, "_hub_mixin_info", None)
    class_tags = list(getattr(getattr(info, "model_card_data", None), "tags", None) or [])
    encoders = sorted({f"{name}: {f.get('encoder')}" for d in domains for name, f in (d.get("features") or {}).items()})
    card_data = ModelCardData(
        library_name="mmseqrec",
        tags=sorted({"sequential-recommendation", "recommendation", model_type, *class_tags}),
        model_name=title,
        model_type=model_type,
        stage=stage,
        training_domains=domain_names or None,
        feature_encoders=encoders or None,
    )
    if not pretraining and results.get("test"):
        from huggingface_hub import EvalResult

        card_data.eval_results = [
            EvalResult(
                task_type="sequential-recommendation", task_name="Next-item recommendation (leave-one-out, full ranking)",
                dataset_type=str(results.get("domain")), dataset_name=str(results.get("domain")), dataset_split=split,
                metric_type=metric, metric_name=f"{split} {metric}", metric_value=float(results[split][metric]),
            )
            for split in ("valid", "test")
            for metric in METRIC_ORDER
            if metric in (results.get(split) or {})
        ]

    lines = [f"# {title}", ""]
    lines += [
        f"A `{class_name}` model of mmseqrec (`model_type: {model_type}`)"
        + (f", {'pretrained' if pretraining else 'trained'} with stage `{stage}`" if stage else "")
        + (f", starting from `{resolved['checkpoint']}`" if resolved.get("checkpoint") else "")
        + (f"; {results['trainable_parameters']:,} trainable parameters" if results.get("trainable_parameters") is not None else "")
        + ".",
        "",
        "## Model configuration",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in model_section.items()],
        "",
        "## Training data",
        "",
    ]
    if domains:
        lines += ["| domain | source | users | items | interactions | item features (encoder, dim, coverage) |", "|---|---|---|---|---|---|"]
        for d in domains:
            feats = "; ".join(
                f"{name}: {f.get('encoder')}, {f.get('dim')}-d, {_percent(f.get('coverage'))}" for name, f in (d.get("features") or {}).items()
            )
            source = str(d.get("source")) + (" (synthetic)" if d.get("synthetic") else "")
            lines.append(
                f"| {d.get('name')} | {source} | {_count(d.get('users'))} | {_count(d.get('items'))} | {_count(d.get('interactions'))} | {feats or '-'} |"
            )
    else:
        lines.append("Not recorded (saved outside a training run, or by an older version).")
    lines += ["", "## Evaluation", ""]
    if pretraining:
        loss = results.get("final_loss")
        lines.append(
            f"A pretrained model is not evaluated on its own: {results.get('epochs_run', '?')} epochs, final training loss "
            f"{loss:.4f}." if isinstance(loss, (int, float)) else "A pretrained model is not evaluated on its own."
        )
        lines.append(
            f"Fine-tune it on a target domain with `finetune --domain <Domain> --model {model_type} --checkpoint {reference}`."
        )
    elif results.get("test"):
        lines += [
            (
                f"Leave-one-out split, full ranking over all {results.get('domain')} items (no sampled negatives); the epoch "
                f"was selected on valid NDCG@10 (best epoch {results.get('best_epoch')} of {results.get('epochs_run')}, "
                f"seed {results.get('seed')})."
            ),
            "",
            "| split | " + " | ".join(METRIC_ORDER) + " |",
            "|---|" + "---|" * len(METRIC_ORDER),
        ]
        for split in ("valid", "test"):
            values = results.get(split) or {}
            lines.append(f"| {split} | " + " | ".join(f"{values[m]:.4f}" if m in values else "-" for m in METRIC_ORDER) + " |")
    else:
        lines.append("No evaluation recorded.")
    lines += ["", "## How it was made", ""]
    command = resolved.get("command")
    lines += ["```", command if command else "(command not recorded)", "```", ""]
    if train:
        lines += ["Training settings: " + ", ".join(f"{k}={v}" for k, v in train.items()) + ".", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import mmseqrec",
        "",
        f'model = mmseqrec.load_pretrained("{reference}")  # the model alone',
        *(
            []
            if pretraining
            else [
                f'recommender = mmseqrec.load("{reference}", domain="{domain_names[0] if domain_names else "<Domain>"}")  # bound to the prepared domain\'s items',
                'recommender.recommend([["<raw item id>", "<raw item id>"]], k=10)',
            ]
        ),
        "```",
        "",
    ]
    metadata = card_data.to_yaml()
    return f"---\n{metadata}\n---\n\n" + "\n".join(lines)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _percent(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "-"


