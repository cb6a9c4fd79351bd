"""open_clip text and image towers: MISSRec's CLIP ViT-B/32 features (512-d).

The vectors are the projected CLIP embeddings (``encode_text``: the end-of-text token through
the text projection; ``encode_image``: the class token through the visual projection), the usual
choice for "CLIP features" and the one the MISSRec release matches.

**Normalisation.** By default the vectors are stored *without* L2 normalisation. The released
MISSRec features (``.feat1CLS`` / ``.feat3CLS``) are not normalised (norms about 7-8 for text and
9-10 for images on the Scientific release), and MISSRec adapts the raw vectors with a linear layer
and normalises only afterwards; storing raw vectors keeps our features interchangeable with the
release. ``normalize=True`` (``--normalize``) stores unit vectors instead, for cosine-similarity
uses; the choice is recorded in the manifest.

**Text length.** CLIP reads at most 77 tokens; longer item texts are cut (the tokenizer keeps the
start and ends with the end-of-text token). The number of cut texts is recorded.

open_clip is an optional dependency (``pip install mmseqrec[clip]``); it is imported only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

#: Weight tags that open_clip downloads; anything else given as ``pretrained`` must be a local file.
RANDOM_WEIGHTS = ("none", "random")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_precision(precision: str, device: torch.device) -> str:
    """``auto`` means fp16 autocast on a GPU and fp32 on the CPU."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast for fp16/bf16 (the weights stay fp32); a no-op context for fp32."""
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


class ClipEncoder:
    """An open_clip model with its image preprocessing and tokenizer.

    Args:
        model: an open_clip ``CLIP`` model (``encode_text`` / ``encode_image``).
        preprocess: the evaluation image transform (PIL image -> (3, H, W) tensor).
        tokenizer: the model's tokenizer (list of strings -> (B, context_length) token ids).
        description: what the manifest records as the encoder.
        settings: the model name, weights and options, for the manifest and the resume key.
        device: where to run.
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast).
        normalize: store L2-normalised vectors.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess,
        tokenizer,
        description: str,
        settings: dict,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        normalize: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.precision = pick_precision(precision, self.device)
        self.normalize = normalize
        self.description = description
        self.settings = {**settings, "precision": self.precision, "normalized": normalize}
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        self.dim = _output_dim(self.model, self.tokenizer, self.device)

    @classmethod
    def load(
        cls,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        device: str = "auto",
        precision: str = "auto",
        normalize: bool = False,
        cache_dir: str | None = None,
    ) -> ClipEncoder:
        """Build the open_clip model ``model_name`` with weights ``pretrained``.

        ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...; downloaded
        or read from the cache), a local checkpoint file, or ``none`` for random weights (tests).
        """
        try:
            import open_clip
        except ImportError as err:
            raise ImportError("CLIP extraction needs open_clip: pip install 'mmseqrec[clip]'") from err

        weights = None if pretrained is None or str(pretrained).lower() in RANDOM_WEIGHTS else str(pretrained)
        if weights is not None and ("/" in weights or Path(weights).suffix) and not Path(weights).is_file():
            raise FileNotFoundError(f"--pretrained {weights}: no such checkpoint file (or give an open_clip tag such as 'openai')")
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights, cache_dir=cache_dir)
        tokenizer = open_clip.get_tokenizer(model_name)
        if model_name.startswith(("local-dir:", "hf-hub:")):  # the folder/repo brings config and weights
            description = f"open_clip {model_name}"
        elif weights is None:
            description = f"open_clip {model_name} (RANDOM weights: for tests only)"
        elif Path(weights).is_file():
            description = f"open_clip {model_name} (weights {Path(weights).name})"
        else:
            description = f"open_clip {model_name} ({weights})"
        settings = {
            "encoder_type": "clip",
            "library": f"open_clip {getattr(open_clip, '__version__', '?')}",
            "model": model_name,
            "pretrained": weights if weights is None or not Path(weights).is_file() else str(Path(weights).resolve()),
        }
        resolved = pick_device(device)
        return cls(model, preprocess, tokenizer, description, settings, resolved, pick_precision(precision, resolved), normalize)

    def _finish(self, vectors: torch.Tensor) -> np.ndarray:
        vectors = vectors.float()
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """(B, d) text vectors and the number of texts cut to the context length."""
        tokens = self.tokenizer(list(texts))
        # A text that fills the whole context was cut (or fits exactly): its last slot is not padding.
        truncated = int((tokens[:, -1] != 0).sum())
        with autocast(self.device, self.precision):
            vectors = self.model.encode_text(tokens.to(self.device))
        return self._finish(vectors), truncated

    def prepare_image(self, image) -> torch.Tensor:
        """The model's input for one RGB PIL image (resize, crop, normalise); thread-safe."""
        return self.preprocess(image)

    @torch.no_grad()
    def encode_prepared(self, pixels: Sequence[torch.Tensor]) -> np.ndarray:
        """(B, d) image vectors for tensors from ``prepare_image``."""
        with autocast(self.device, self.precision):
            vectors = self.model.encode_image(torch.stack(list(pixels)).to(self.device))
        return self._finish(vectors)

    def encode_images(self, images: Sequence) -> np.ndarray:
        """(B, d) image vectors for RGB PIL images."""
        return self.encode_prepared([self.prepare_image(image) for image in images])


def _output_dim(model: torch.nn.Module, tokenizer, device: torch.device) -> int:
    """The embedding dimension: the image tower's ``output_dim`` where it has one, else a probe."""
    dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if dim:
        return int(dim)
    with torch.no_grad():
        return int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
