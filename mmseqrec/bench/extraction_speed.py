"""Feature-extraction throughput: item texts and images per second through the CLIP encoder.

The real open_clip ViT-B/32 architecture with random weights (``pretrained="none"``: nothing
is downloaded; the cost does not depend on the weights). Texts are item-like strings of about
40 words; images are random 256 x 256 RGB pictures that go through the model's own
preprocessing (resize, crop, normalise) and the image tower, as ``mmseqrec extract`` does.
"""

from __future__ import annotations

import time

import numpy as np

from mmseqrec.features.clip import ClipEncoder


def item_texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [f"word{i}" for i in range(5000)]
    return [" ".join(rng.choice(words, size=40)) for _ in range(count)]


def random_images(count: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)) for _ in range(count)]


def measure(texts: int = 256, images: int = 64, batch_size: int = 64, model: str = "ViT-B-32", device: str = "auto") -> dict:
    encoder = ClipEncoder.load(model, pretrained="none", device=device)
    result = {"encoder": f"open_clip {model} (random weights)", "device": str(encoder.device), "precision": encoder.precision,
              "batch_size": batch_size}
    batches = [item_texts(texts)[i : i + batch_size] for i in range(0, texts, batch_size)]
    encoder.encode_texts(batches[0][:2])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        encoder.encode_texts(batch)
    seconds = time.perf_counter() - start
    result.update(texts=texts, text_seconds=seconds, texts_per_second=texts / seconds)
    pictures = random_images(images)
    start = time.perf_counter()
    for i in range(0, images, batch_size):
        encoder.encode_images(pictures[i : i + batch_size])
    seconds = time.perf_counter() - start
    result.update(images=images, image_seconds=seconds, images_per_second=images / seconds)
    return result
