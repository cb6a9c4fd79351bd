"""Exported models: save_pretrained -> from_pretrained for every sequential model in MODELS (the
general top-N models have theirs in test_topn_models.py, on a domain with a top-N split), the model card,
publishing through a recording stand-in for the Hub client, loading back by repository id, and
clear errors offline. Nothing here touches the network: the Hugging Face cache is a temporary
folder, HF_HUB_OFFLINE is on, and the stand-in stores each upload where a download would find it.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub import constants as hub_constants
from tiny import write_tiny_domain

from finetune.cli import main as finetune_main
from mmseqrec import hub
from mmseqrec.cli import main as mmseqrec_main
from mmseqrec.data.batching import SequenceCollator
from mmseqrec.data.loading import load_domain
from mmseqrec.hub import HubError, load_pretrained
from mmseqrec.models import MODELS, MISSRec, MISSRecConfig, SASRec, SASRecConfig

SMALL = {"hidden_size": 16, "inner_size": 16, "num_heads": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_domain(root)
    return root


@pytest.fixture(scope="module")
def domain(data):
    return load_domain("Tiny", data_dir=data)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, with the Hub switched off."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


class RecordingHub:
    """Stands in for ``huggingface_hub.HfApi`` at the upload boundary: records every call, and
    stores each uploaded folder in the Hugging Face cache layout (``refs/main`` -> snapshot), so
    that a later offline ``snapshot_download`` finds it as if it had been downloaded."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.calls: list[tuple[str, dict]] = []
        self.uploads: dict[str, dict[str, bytes]] = {}

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, "repo_type": repo_type, "private": private, "exist_ok": exist_ok}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None, **kwargs):
        self.calls.append(("upload_folder", {"repo_id": repo_id, "repo_type": repo_type, "commit_message": commit_message}))
        files = {p.name: p.read_bytes() for p in sorted(Path(folder_path).iterdir())}
        self.uploads[repo_id] = files
        commit = hashlib.sha1(b"".join(files.values())).hexdigest()
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for name, content in files.items():
            (snapshot / name).write_bytes(content)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)


def _batch(domain, split="test"):
    examples = domain.splits[split]
    return SequenceCollator(examples, 50)(list(range(len(examples))))


def _build(name: str, domain):
    """A small model of every registered kind, with non-trivial state."""
    model_cls, config_cls = MODELS[name]
    fields = config_cls.__dataclass_fields__
    values = {k: v for k, v in SMALL.items() if k in fields}
    values.update(model_cls.domain_config(domain))
    torch.manual_seed(0)
    model = model_cls(config_cls(**values))
    model.attach_domain(domain)
    model.on_epoch_start(0)  # MISSRec fills its interest tables here
    return model.eval()


@pytest.mark.parametrize("name", sorted(name for name, (cls, _) in MODELS.items() if cls.track == "sequential"))
def test_save_pretrained_then_from_pretrained_scores_identically(name, domain, tmp_path):
    model = _build(name, domain)
    batch = _batch(domain)
    with torch.no_grad():
        expected = model.score_all(batch)
    model.save_pretrained(tmp_path / name)
    assert {p.name for p in (tmp_path / name).iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    assert json.loads((tmp_path / name / "config.json").read_text())["model_type"] == name

    for loaded in (type(model).from_pretrained(tmp_path / name), load_pretrained(tmp_path / name)):
        assert type(loaded) is type(model) and loaded.config == model.config
        loaded.attach_domain(domain)
        with torch.no_grad():
            assert torch.equal(loaded.eval().score_all(batch), expected)


def test_from_pretrained_refuses_what_does_not_match(domain, tmp_path):
    model = SASRec(SASRecConfig(num_items=domain.num_items, **SMALL))
    model.save_pretrained(tmp_path / "sasrec")
    config = json.loads((tmp_path / "sasrec" / "config.json").read_text())
    (tmp_path / "sasrec" / "config.json").write_text(json.dumps({**config, "hidden_size": 8, "num_heads": 1}))
    with pytest.raises(ValueError, match="model.safetensors does not fit SASRec"):
        SASRec.from_pretrained(tmp_path / "sasrec")
    (tmp_path / "sasrec" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors missing"):
        load_pretrained(tmp_path / "sasrec")


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    code = finetune_main([
        "--domain", "Tiny", "--data-dir", str(data), "--model", "sasrec", "--output", str(out), "--quiet",
        "train.epochs=2", "train.batch_size=64", "model.hidden_size=16", "model.inner_size=16",
    ])
    assert code == 0
    return out / "sasrec-seed2020"


def test_publish_uploads_weights_config_and_model_card(finished_run, domain, hub_cache):
    recorder = RecordingHub(hub_cache)
    url = hub.publish(finished_run, "my-org/tiny-sasrec", private=True, api=recorder)
    assert url == "https://huggingface.co/my-org/tiny-sasrec"
    assert recorder.calls[0] == ("create_repo", {"repo_id": "my-org/tiny-sasrec", "repo_type": "model", "private": True, "exist_ok": True})
    assert recorder.calls[1][0] == "upload_folder" and recorder.calls[1][1]["repo_id"] == "my-org/tiny-sasrec"
    files = recorder.uploads["my-org/tiny-sasrec"]
    assert set(files) == {"model.safetensors", "config.json", "README.md"}
    assert files["model.safetensors"] == (finished_run / "best" / "model.safetensors").read_bytes()

    metrics = json.loads((finished_run / "metrics.json").read_text())
    card = ModelCard(files["README.md"].decode())
    meta = card.data.to_dict()
    assert meta["library_name"] == "mmseqrec" and meta["model_type"] == "sasrec" and meta["training_domains"] == ["Tiny"]
    assert "sequential-recommendation" in meta["tags"]
    published = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert published[("test", "ndcg@10")] == pytest.approx(metrics["test"]["ndcg@10"])
    assert published[("valid", "recall@10")] == pytest.approx(metrics["valid"]["recall@10"])
    text = card.text
    assert "| Tiny | test-fixture | 80 | 40 | 654 |" in text  # domain, source, users, items, interactions
    assert f"| test | {metrics['test']['recall@10']:.4f} | {metrics['test']['ndcg@10']:.4f} |" in text
    assert "finetune --domain Tiny" in text and "--model sasrec" in text  # the command that made it
    assert 'load_pretrained("my-org/tiny-sasrec")' in text

    # ... and it comes back by its repository id (offline, from the cache the upload went to).
    batch = _batch(domain)
    reference = SASRec.from_pretrained(finished_run / "best")
    for loaded in (SASRec.from_pretrained("my-org/tiny-sasrec"), load_pretrained("my-org/tiny-sasrec")):
        with torch.no_grad():
            assert torch.equal(loaded.score_all(batch), reference.score_all(batch))


def test_publish_command_line(finished_run, hub_cache, monkeypatch, capsys):
    recorder = RecordingHub(hub_cache)
    monkeypatch.setattr(hub, "HfApi", lambda: recorder)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    assert mmseqrec_main(["publish", str(finished_run), "--repo-id", "my-org/cli-sasrec"]) == 0
    assert "published" in capsys.readouterr().out and "my-org/cli-sasrec" in recorder.uploads
    assert recorder.calls[0][1]["private"] is False

    assert mmseqrec_main(["publish", str(finished_run), "--repo-id", "x/y", "--dry-run"]) == 0
    assert "README.md" in capsys.readouterr().out and (finished_run / "hub-export" / "README.md").is_file()
    assert len(recorder.calls) == 2  # the dry run uploaded nothing

    assert mmseqrec_main(["publish", str(finished_run), "--repo-id", "not a repo id"]) == 2
    assert "expected a Hub repository id" in capsys.readouterr().err

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert mmseqrec_main(["publish", str(finished_run), "--repo-id", "my-org/offline"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1 is set" in err and "Traceback" not in err


def test_finetune_from_a_hub_repository_and_clear_errors_offline(data, domain, hub_cache, tmp_path, capsys, monkeypatch):
    # A pretrained MISSRec, published (into the local cache) as a bare saved-model folder.
    torch.manual_seed(0)
    pretrained = MISSRec(MISSRecConfig(**MISSRec.domain_config(domain), mode="inductive", **SMALL))
    pretrained.save_pretrained(tmp_path / "pretrained")
    hub.publish(tmp_path / "pretrained", "my-org/missrec-tiny", api=RecordingHub(hub_cache))

    args = ["--domain", "Tiny", "--data-dir", str(data), "--model", "missrec", "--quiet", "train.epochs=1", "train.batch_size=64"]
    assert finetune_main([*args, "--checkpoint", "my-org/missrec-tiny", "--output", str(tmp_path / "ft")]) == 0
    run = tmp_path / "ft" / "missrec-seed2020"
    assert "starting from `my-org/missrec-tiny`" in (run / "best" / "README.md").read_text()
    capsys.readouterr()

    # Offline and not cached: one sentence, no stack trace.
    assert finetune_main([*args, "--checkpoint", "my-org/never-published", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1 is set and my-org/never-published is not in the local cache" in err and "Traceback" not in err
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1 is set"):
        MISSRec.from_pretrained("my-org/never-published")

    # Online but the Hub cannot be reached (a closed local port): the same kind of answer.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubError, match="could not be reached"):
        load_pretrained("my-org/never-published")
    with pytest.raises(FileNotFoundError, match="not a Hub repository id"):
        load_pretrained("no/such/folder")
