"""MISSRec (Wang et al., ACM MM 2023): multimodal interest-aware sequence representations.

Each item has frozen text and image features (CLIP ViT-B/32, 512-d). Two linear adapters map
them to the model width D. Before every training epoch the adapted text and image tokens of
all items are clustered into K "interests" (``mmseqrec.interest``, DPC-KNN by default); each
item thereby gets a text-interest id and an image-interest id, and every interest a centroid.

For a sequence:
1. interest tokens: the distinct interest ids of its items (both modalities), looked up as
   centroids, go through a transformer **encoder** (no positions, no causal mask);
2. item tokens: adapted text + adapted image + learned position (+ an item-ID embedding in
   transductive mode), LayerNorm, dropout, go through a transformer **decoder** with
   bidirectional self-attention that cross-attends to the encoded interests;
3. the decoder output at the last real position, L2-normalised, is the sequence vector s.

An item is scored by *dynamic fusion* of the cosines between s and its normalised adapted
text and image vectors, with weights softmax(alpha * cos) (a learned scalar alpha, starting at 0,
i.e. the plain mean); transductive mode averages in the ID cosine as (ID + 2 * fused) / 3. Logits
are scores / temperature (0.07).

Losses: pretraining is the in-batch sequence->item contrastive loss on fused scores, plus
``seqseq_weight`` (1e-3) x a sequence->sequence contrastive loss against an augmented view,
plus ``reg_weight`` (1e-4) x the interest regulariser on both views. Fine-tuning is
cross-entropy over all items plus ``reg_weight`` x the regulariser.

Parameter-efficient fine-tuning (stage ``peft``) trains the adapters, the input LayerNorm,
alpha and, in transductive mode, the ID table; positions and the whole transformer are frozen.
With the paper's configuration that is 308,401 parameters (+ 300 x (items + 1) with IDs).

Two options outside the paper, both off by default, let the adapters be compared with
UniSRec's: ``adapter: moe`` replaces each linear adapter by UniSRec's mixture of
parametric-whitening experts, and ``feature_dropout`` drops feature dimensions before the adapters
in training (measured on the synthetic corpus in
``docs/results/synthetic-transfer/zero-shot-by-epoch/``).

Corrections to the released code (each on by default; spec ``missrec.md`` section 7):
- **Missing modalities are masked.** The released code feeds an all-zero feature row through the
  adapter, so every image-less item enters the decoder, the clustering and the fused score as
  the adapter bias. Here a missing modality adds nothing to the decoder input, is left out of
  the clustering (it has no interest id), and the fused score uses the present modality only.
- **Interest discovery** is the paper's DPC-KNN on faiss (the released trainer runs a vendored
  mini-batch k-means whose centroids are means of absolute values and which stops after one
  pass); ``interest_algorithm: kmeans`` selects a correct faiss k-means instead.
- **Augmentation** (pretraining) drops the sampled items (each non-first item with probability
  ``item_drop_ratio``) and compacts the rest, for text and image alike; the released scatter
  drops the wrong items and never augments the image side. The choice between item drop and
  text-feature drop (``text_aug``, when the domain has it) is made per sequence, not per batch.
- **The interest regulariser** comes in two forms (``reg_formula``): ``reference``, the released
  code's (the fraction-scaled sum over all interest slots, padding included, summed over the
  batch, / D), and ``masked_mean``, the mean over each row's real interest tokens averaged over
  the batch, which does not grow with the batch size or the padding. With the same weight the
  masked mean is about 2e4 times smaller at batch 512, so it has its own default weight (see
  ``reg_weight``). ``reference`` is the default because it transferred best on valid: pretrained
  in the demo configuration on the synthetic sources and tuned with PEFT on the five synthetic
  targets (one seed), mean valid NDCG@10 0.1429, against 0.1400 for the masked mean and 0.1396
  with no regulariser (``docs/synthetic-transfer.md``, ablations).
- The padding item is not a candidate in the fine-tuning softmax; in-batch pretraining
  negatives that are the same item as the positive are removed rather than counted.
"""

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.interest import discover_interests, num_interests, unique_interests
from mmseqrec.models.base import (
    Recommender,
    check_new_features,
    check_stage,
    content_domain_config,
    extend_buffer,
    gather_last,
    init_bert_style,
    keep_most_recent,
    transductive_refusal,
)
from mmseqrec.models.unisrec import MoEAdaptor

MODES = ("transductive", "inductive")
REG_FORMULAS = ("reference", "masked_mean")
#: gamma of the paper, for the released regulariser
REFERENCE_REG_WEIGHT = 1e-4
#: gamma for the masked mean: 1e-4 x the ratio of the two forms at initialisation in the paper's
#: fine-tuning configuration with batch 512 (17,100-22,400 on the Scientific subset, three seeds;
#: ``benchmarks/regulariser_scale.py``), so that both terms start about as large (0.8-1.0 next
#: to a cross-entropy of 7.2)
MASKED_MEAN_REG_WEIGHT = 2.0
PRETRAIN_NEGATIVES = ("in_batch", "in_batch_logq", "all_items")

# nn.Transformer's encoder converts padded batches to nested tensors in eval mode and warns
# that the API is a prototype on every call; the conversion is correct, the warning is noise.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")


@dataclass
class MISSRecConfig:
    """Configuration of MISSRec (defaults: the paper's configuration, ``props/MISSRec.yaml``).

    Attributes:
        num_items: N, the number of items without padding (set from the domain).
        text_dim: dimension of the frozen text features (set from the domain; 512 for CLIP).
        image_dim: dimension of the frozen image features (set from the domain; 512 for CLIP).
        mode: ``transductive`` adds an item-ID embedding to the input and the ID cosine to the
            score; ``inductive`` uses content only and works for items never seen in training.
        modalities: ``text+image``, ``text`` or ``image``.
        max_len: position table size; longer histories keep their most recent items.
        hidden_size: model width D (300).
        num_heads: attention heads of encoder and decoder (4).
        inner_size: feed-forward width (256).
        num_encoder_layers: interest encoder layers (1).
        num_decoder_layers: item decoder layers (1).
        dropout: dropout everywhere, attention probabilities included (0.5).
        adapter: ``linear`` (the paper's: one Linear per modality) or ``moe`` (UniSRec's
            mixture of ``adapter_experts`` parametric-whitening experts with a noisy gate).
        adapter_experts: experts of a ``moe`` adapter (8).
        feature_dropout: dropout on the frozen feature vectors before the adapters, in training
            only (0.0, as in the paper; UniSRec applies 0.2 before its experts).
        layer_norm_eps: epsilon of every LayerNorm (1e-12).
        initializer_range: std of the N(0, std) initialisation of positions, IDs and the
            transformer's linear layers (0.02; the adapters keep PyTorch's default init).
        temperature: logits are scores / temperature (0.07).
        fusion: ``dynamic`` (softmax(alpha * cos) weights) or ``static`` (the mean).
        interest_ratio: K = ceil(ratio x item tokens); 0.5 for fine-tuning, 0.02 for pretraining.
        interest_algorithm: ``dpc_knn`` (the paper's) or ``kmeans``.
        knn_k: neighbours for the DPC-KNN density (absolute; 10).
        knn_ratio: if set, use ceil(knn_ratio x tokens) neighbours instead (the paper's
            ``knn_local_ratio``, e.g. 0.2; quadratic in cost, only for small domains).
        pretrain_negatives: what the pretraining sequence-item loss ranks the target against.
            ``in_batch`` (the paper's): the other targets of the batch. ``in_batch_logq``: the
            same, with every logit lowered by the log of its item's share of the training
            targets (the sampling-bias correction of Yi et al., RecSys 2019): in-batch
            negatives are drawn by popularity, so the uncorrected loss learns scores without
            the popularity term that full ranking needs. ``all_items``: a softmax over every
            item of the (mixed) catalogue, as in fine-tuning; costs B x N scores per batch.
        seqseq_weight: weight lambda of the sequence-sequence contrastive loss (1e-3).
        reg_formula: ``reference`` (the released code's interest regulariser) or ``masked_mean``
            (see the module docstring).
        reg_weight: weight gamma of the interest regulariser; None takes the formula's default,
            1e-4 for ``reference`` (the paper's gamma) and ``MASKED_MEAN_REG_WEIGHT`` for
            ``masked_mean`` (a weight that makes the term as large as the reference's at
            initialisation with batch 512).
        item_drop_ratio: probability of dropping each non-first item in the augmented view (0.2).
        item_drop_prob: probability that a sequence's augmented view uses item drop rather than
            text-feature drop (0.9); always item drop when no ``text_aug`` feature exists.
        text_feature: name of the text feature set in the domain (``text``).
        image_feature: name of the image feature set (``image``).
        text_aug_feature: name of the augmented text feature set used in pretraining (``text_aug``).
        seed: seed of the interest clustering.
    """

    num_items: int = 0
    text_dim: int = 512
    image_dim: int = 512
    mode: str = "transductive"
    modalities: str = "text+image"
    max_len: int = 50
    hidden_size: int = 300
    num_heads: int = 4
    inner_size: int = 256
    num_encoder_layers: int = 1
    num_decoder_layers: int = 1
    dropout: float = 0.5
    adapter: str = "linear"
    adapter_experts: int = 8
    feature_dropout: float = 0.0
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    temperature: float = 0.07
    fusion: str = "dynamic"
    interest_ratio: float = 0.5
    interest_algorithm: str = "dpc_knn"
    knn_k: int = 10
    knn_ratio: float | None = None
    pretrain_negatives: str = "in_batch"
    seqseq_weight: float = 1e-3
    reg_formula: str = "reference"
    reg_weight: float | None = None
    item_drop_ratio: float = 0.2
    item_drop_prob: float = 0.9
    text_feature: str = "text"
    image_feature: str = "image"
    text_aug_feature: str = "text_aug"
    seed: int = 0


class MISSRec(Recommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["sequential-recommendation", "multimodal", "missrec"]):
    model_type = "missrec"
    # Adapters, fusion, input norm, positions and the transformer transfer; IDs and interests
    # belong to the domain.
    transferable_prefixes = ("transformer.", "position_embedding.", "input_norm.", "text_adapter.", "image_adapter.", "fusion_alpha")
    architecture_fields = (
        "text_dim", "image_dim", "modalities", "max_len", "hidden_size", "num_heads", "inner_size",
        "num_encoder_layers", "num_decoder_layers", "layer_norm_eps", "fusion", "adapter", "adapter_experts",
    )

    def __init__(self, config: MISSRecConfig):
        super().__init__()
        if config.num_items < 1:
            raise ValueError("MISSRecConfig.num_items must be set to the number of items of the domain")
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{config.mode}'")
        if config.modalities not in ("text+image", "text", "image"):
            raise ValueError(f"modalities must be text+image, text or image, got '{config.modalities}'")
        if config.fusion not in ("dynamic", "static"):
            raise ValueError(f"fusion must be dynamic or static, got '{config.fusion}'")
        if config.reg_formula not in REG_FORMULAS:
            raise ValueError(f"reg_formula must be one of {', '.join(REG_FORMULAS)}, got '{config.reg_formula}'")
        if config.adapter not in ("linear", "moe"):
            raise ValueError(f"adapter must be linear or moe, got '{config.adapter}'")
        if config.pretrain_negatives not in PRETRAIN_NEGATIVES:
            raise ValueError(f"pretrain_negatives must be one of {', '.join(PRETRAIN_NEGATIVES)}, got '{config.pretrain_negatives}'")
        self.config = config
        self.use_text = "text" in config.modalities
        self.use_image = "image" in config.modalities
        width = config.hidden_size

        self.transformer = nn.Transformer(
            d_model=width,
            nhead=config.num_heads,
            num_encoder_layers=config.num_encoder_layers,
            num_decoder_layers=config.num_decoder_layers,
            dim_feedforward=config.inner_size,
            dropout=config.dropout,
            activation="gelu",
            layer_norm_eps=config.layer_norm_eps,
            batch_first=True,
            norm_first=False,
        )
        self.position_embedding = nn.Embedding(config.max_len, width)
        self.input_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.input_dropout = nn.Dropout(config.dropout)
        self.item_embedding = nn.Embedding(config.num_items + 1, width, padding_idx=0) if config.mode == "transductive" else None
        # As in the released model: N(0, std) for positions, IDs and the transformer's Linear
        # layers (its packed attention in-projections keep nn.Transformer's xavier init)...
        self.apply(lambda module: init_bert_style(module, config.initializer_range))
        # ...and the adapters, created afterwards, keep their own init (PyTorch's default for the
        # paper's Linear adapters, N(0, std) experts and zero gates for ``adapter: moe``).
        self.text_adapter = self._make_adapter(config.text_dim) if self.use_text else None
        self.image_adapter = self._make_adapter(config.image_dim) if self.use_image else None
        self.fusion_alpha = nn.Parameter(torch.zeros(()))

        # Interest state, refreshed before every epoch; saved with the model so that a saved
        # fine-tuned model scores exactly as it did. Sized for the largest K the ratio allows.
        max_interests = num_interests(2 * config.num_items, config.interest_ratio)
        self.register_buffer("interest_embeddings", torch.zeros(max_interests + 1, width))
        self.register_buffer("text_interest", torch.zeros(config.num_items + 1, dtype=torch.long))
        self.register_buffer("image_interest", torch.zeros(config.num_items + 1, dtype=torch.long))
        self.register_buffer("interest_count", torch.zeros((), dtype=torch.long))
        # Frozen item features come from the domain (``attach_domain``) and are not saved.
        self.register_buffer("text_features", torch.zeros(config.num_items + 1, config.text_dim), persistent=False)
        self.register_buffer("text_present", torch.zeros(config.num_items + 1, dtype=torch.bool), persistent=False)
        self.register_buffer("image_features", torch.zeros(config.num_items + 1, config.image_dim), persistent=False)
        self.register_buffer("image_present", torch.zeros(config.num_items + 1, dtype=torch.bool), persistent=False)
        self.register_buffer("text_aug_features", torch.zeros(0, config.text_dim), persistent=False)
        # log of each item's share of the training targets (for ``in_batch_logq``).
        self.register_buffer("target_log_prior", torch.zeros(config.num_items + 1), persistent=False)
        self.features_attached = False

    def _make_adapter(self, input_dim: int) -> nn.Module:
        cfg = self.config
        if cfg.adapter == "linear":
            return nn.Linear(input_dim, cfg.hidden_size)
        # Feature dropout is applied before any adapter (``_adapted``), so the experts add none.
        return MoEAdaptor(input_dim, cfg.hidden_size, cfg.adapter_experts, 0.0, cfg.initializer_range, noise=True)

    # ---------------------------------------------------------------------------------------
    # Domain data
    # ---------------------------------------------------------------------------------------
    @staticmethod
    def domain_config(domain, config: dict | None = None) -> dict:
        """Config values that come from the domain: item count and the dimensions of the feature
        sets named by ``text_feature`` / ``image_feature`` (in ``config``, else the defaults)."""
        return content_domain_config(domain, config, MISSRecConfig, {"text_dim": "text_feature", "image_dim": "image_feature"})

    def attach_domain(self, domain) -> None:
        """Copy the domain's frozen features into the model (not saved with it)."""
        cfg = self.config
        if domain.num_items != cfg.num_items:
            raise ValueError(f"model built for {cfg.num_items} items, domain {domain.name} has {domain.num_items}")
        wanted = [(cfg.text_feature, "text", self.use_text), (cfg.image_feature, "image", self.use_image)]
        for name, slot, used in wanted:
            if not used:
                continue
            if name not in domain.features:
                raise ValueError(
                    f"MISSRec ({cfg.modalities}) needs the feature set '{name}' but domain {domain.name} has "
                    f"{', '.join(domain.features) or 'none'}; extract it first or set model.modalities"
                )
            feature = domain.features[name]
            expected = cfg.text_dim if slot == "text" else cfg.image_dim
            if feature.dim != expected:
                raise ValueError(f"feature '{name}' of {domain.name} is {feature.dim}-d, the model expects {expected}")
            getattr(self, f"{slot}_features").copy_(torch.tensor(np.asarray(feature.values)))
            getattr(self, f"{slot}_present").copy_(torch.as_tensor(feature.present))
        aug = domain.features.get(cfg.text_aug_feature)
        if aug is not None and self.use_text and aug.dim == cfg.text_dim:
            # Items without an augmented text fall back to their plain text.
            values = np.where(aug.present[:, None], np.asarray(aug.values), np.asarray(domain.features[cfg.text_feature].values))
            self.text_aug_features = torch.as_tensor(values, dtype=torch.float32, device=self.text_features.device)
        # Add-one smoothing keeps items never seen as a target finite.
        counts = np.bincount(domain.splits["train"].target, minlength=cfg.num_items + 1)[: cfg.num_items + 1] + 1.0
        self.target_log_prior.copy_(torch.as_tensor(np.log(counts / counts[1:].sum()), dtype=torch.float32))
        self.features_attached = True

    # ---------------------------------------------------------------------------------------
    # Stages
    # ---------------------------------------------------------------------------------------
    def trainable_parameters(self, stage: str) -> Iterator[tuple[str, nn.Parameter]]:
        check_stage(stage)
        for name, param in self.named_parameters():
            if stage != "peft":
                yield name, param
            elif name.split(".")[0] in ("text_adapter", "image_adapter", "input_norm", "fusion_alpha", "item_embedding"):
                yield name, param

    # ---------------------------------------------------------------------------------------
    # Item side
    # ---------------------------------------------------------------------------------------
    def _adapted(self, ids: torch.Tensor, text_override: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Adapted text and image vectors of ``ids`` (any shape), zero where the modality is missing.

        Each distinct item is adapted once and the result gathered: a batch of sequences repeats
        items (and padding) many times, so this is several times cheaper than adapting every
        position. Positions that use the augmented text feature are adapted separately.
        """
        unique, inverse = torch.unique(ids, return_inverse=True)
        drop = lambda features: F.dropout(features, self.config.feature_dropout, self.training)  # noqa: E731
        text = image = None
        if self.use_text:
            adapted = self.text_adapter(drop(self.text_features[unique])) * self.text_present[unique][:, None]
            text = adapted[inverse]
            if text_override is not None and self.text_aug_features.numel() and bool(text_override.any()):
                swapped = ids[text_override]
                aug = self.text_adapter(drop(self.text_aug_features[swapped])) * self.text_present[swapped][:, None]
                text = text.masked_scatter(text_override[..., None], aug)
        if self.use_image:
            adapted = self.image_adapter(drop(self.image_features[unique])) * self.image_present[unique][:, None]
            image = adapted[inverse]
        return text, image

    def _item_vectors(self, ids: torch.Tensor):
        """Normalised adapted vectors, presence masks and (transductive) ID vectors of ``ids``."""
        text, image = self._adapted(ids)
        out = {}
        if self.use_text:
            out["text"] = (F.normalize(text, dim=-1), self.text_present[ids])
        if self.use_image:
            out["image"] = (F.normalize(image, dim=-1), self.image_present[ids])
        ids_vec = F.normalize(self.item_embedding(ids), dim=-1) if self.item_embedding is not None else None
        return out, ids_vec

    def _fused_scores(self, seq: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Cosine-based scores of sequences ``seq`` (B, D) against items ``ids`` (M,): (B, M)."""
        vectors, id_vectors = self._item_vectors(ids)
        cos = torch.stack([seq @ vec.T for vec, _ in vectors.values()], dim=-1)  # (B, M, modalities)
        avail = torch.stack([mask[None, :].expand(seq.shape[0], -1) for _, mask in vectors.values()], dim=-1)
        return self._fuse(cos, avail, None if id_vectors is None else seq @ id_vectors.T)

    def _fuse(self, cos: torch.Tensor, avail: torch.Tensor, id_cos: torch.Tensor | None) -> torch.Tensor:
        """The fused score from per-modality cosines ``cos`` (..., modalities), their availability
        ``avail`` (same shape) and, in transductive mode, the ID cosine ``id_cos`` (...)."""
        weights_logits = (self.fusion_alpha * cos) if self.config.fusion == "dynamic" else torch.zeros_like(cos)
        # Softmax over the modalities an item has; an item with none gets weight 0 everywhere
        # (its logits are set to 0 first so that the softmax has something finite to normalise).
        has_content = avail.any(dim=-1, keepdim=True)
        weights_logits = weights_logits.masked_fill(~avail, float("-inf")).masked_fill(~has_content, 0.0)
        weights = torch.softmax(weights_logits, dim=-1) * avail
        fused = (weights * cos).sum(-1)
        if id_cos is not None:
            return (id_cos + 2 * fused) / 3
        # Inductive: an item with no content has no representation. It is no candidate (as in
        # UniSRec), rather than a score of 0 that would rank it above every negative cosine.
        return fused.masked_fill(~has_content.squeeze(-1), float("-inf"))

    def item_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """``text`` / ``image`` (the modalities used): normalised adapted vectors, zero where an
        item lacks the modality; ``id`` (transductive): normalised ID embeddings. The score fuses
        the per-table cosines with the sequence vector (``_fused_scores``), over the temperature."""
        ids = torch.arange(first_id, end_id, device=self.text_features.device)
        vectors, id_vectors = self._item_vectors(ids)
        tables = {name: vec * mask[:, None] for name, (vec, mask) in vectors.items()}
        if id_vectors is not None:
            tables["id"] = id_vectors
        return tables

    def index_tables(self, first_id: int, end_id: int) -> dict[str, torch.Tensor]:
        """``item_tables`` and ``mean``: the vector whose product with s is the score with equal
        fusion weights (the mean of the present modalities' vectors, in transductive mode
        averaged with the ID vector as (ID + 2 mean) / 3). The per-table searches find the items
        whose best cosine is high; the mean table finds those high on average, which is what the
        fused score rewards when alpha is small (exact for ``fusion: static`` or alpha = 0)."""
        tables = self.item_tables(first_id, end_id)
        content = [tables[name] for name in ("text", "image") if name in tables]
        count = sum((table.any(dim=1) for table in content), torch.zeros(end_id - first_id, device=content[0].device))
        mean = sum(content) / count.clamp(min=1)[:, None]
        tables["mean"] = (tables["id"] + 2 * mean) / 3 if "id" in tables else mean
        return tables

    def new_item_features(self) -> list[str]:
        if self.item_embedding is not None:
            raise transductive_refusal(self)
        return [name for name, used in ((self.config.text_feature, self.use_text), (self.config.image_feature, self.use_image)) if used]

    @torch.no_grad()
    def add_items(self, features: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Append items ranked by their content alone (inductive mode; see ``Recommender.add_items``).

        A new item joins, per modality, the interest of the nearest training item in the adapted
        space: the assignment DPC-KNN makes for a point (its nearest denser neighbour's cluster),
        without re-clustering, which would change every user's interests. An item whose
        features equal an existing item's therefore gets that item's interests.
        """
        cfg = self.config
        self.new_item_features()
        slots = (("text", cfg.text_feature, cfg.text_dim), ("image", cfg.image_feature, cfg.image_dim))
        count = check_new_features(self, features, {name: dim for slot, name, dim in slots if getattr(self, f"use_{slot}")})
        device = self.text_features.device
        for slot, name, dim in slots:
            if getattr(self, f"use_{slot}"):
                values = torch.as_tensor(np.asarray(features[name][0]), dtype=torch.float32, device=device)
                present = torch.as_tensor(np.asarray(features[name][1]), dtype=torch.bool, device=device)
                labels = self._nearest_interests(slot, values, present)
            else:  # an unused modality's tables grow too, so that every per-item table has one row per item
                values = torch.zeros(count, dim, device=device)
                present = torch.zeros(count, dtype=torch.bool, device=device)
                labels = torch.zeros(count, dtype=torch.long, device=device)
            extend_buffer(self, f"{slot}_features", values)
            extend_buffer(self, f"{slot}_present", present)
            extend_buffer(self, f"{slot}_interest", labels)
        # Only pretraining reads the prior; new items get the smallest one (never a target).
        extend_buffer(self, "target_log_prior", self.target_log_prior[1:].min().expand(count))

    def _nearest_interests(self, slot: str, values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(M,) interest id per new item of modality ``slot``: that of its nearest training item
        (0, no interest, where the item lacks the modality or no training item has it). Only the
        training catalogue is searched, so an item gets the same interest whether it was added
        alone, after others, or all at once when a run with added items is loaded again."""
        adapter = getattr(self, f"{slot}_adapter")
        existing = torch.nonzero(self._clustered(slot)).squeeze(1)
        labels = torch.zeros(values.shape[0], dtype=torch.long, device=values.device)
        if not bool(present.any()) or existing.numel() == 0:
            return labels
        was_training = adapter.training
        adapter.eval()  # no gate noise: the clustering saw the adapters this way too
        known = adapter(getattr(self, f"{slot}_features")[existing]).float()
        new = adapter(values[present]).float()
        adapter.train(was_training)
        nearest = torch.cat([torch.cdist(chunk, known).argmin(dim=1) for chunk in new.split(1024)])
        labels[present] = getattr(self, f"{slot}_interest")[existing[nearest]]
        return labels

    def representable(self, ids: torch.Tensor) -> torch.Tensor:
        """Which items the model can score: all in transductive mode, those with a used modality
        otherwise."""
        if self.item_embedding is not None:
            return torch.ones_like(ids, dtype=torch.bool)
        present = torch.zeros_like(ids, dtype=torch.bool)
        if self.use_text:
            present |= self.text_present[ids]
        if self.use_image:
            present |= self.image_present[ids]
        return present

    # ---------------------------------------------------------------------------------------
    # Sequence side
    # ---------------------------------------------------------------------------------------
    def _interest_ids(self, item_seq: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.use_text:
            parts.append(self.text_interest[item_seq])
        if self.use_image:
            parts.append(self.image_interest[item_seq])
        return unique_interests(torch.cat(parts, dim=1))

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor, text_override: torch.Tensor | None = None):
        """Sequence vectors (B, D), L2-normalised, and the encoded interests for the regulariser."""
        if not self.features_attached:
            raise RuntimeError("MISSRec needs its item features: call model.attach_domain(domain) first")
        if text_override is None:
            item_seq, lengths = keep_most_recent(item_seq, lengths, self.config.max_len)
        else:
            item_seq, lengths, text_override = keep_most_recent(item_seq, lengths, self.config.max_len, text_override)
        interests = self._interest_ids(item_seq)
        memory_pad = interests == 0
        # A row with no interest at all (no item has content) keeps one zero token so that
        # attention stays finite. The token bypasses the encoder: encoding it would normalise
        # constant vectors in the encoder's LayerNorms (eps 1e-12), whose backward multiplies
        # by 1e6 per LayerNorm (gradients of 1e16 were measured).
        empty = (interests == 0).all(dim=1)
        memory_pad[empty, 0] = False
        memory = self.transformer.encoder(self.interest_embeddings[interests], src_key_padding_mask=memory_pad)
        memory = torch.where(empty[:, None, None], torch.zeros_like(memory), memory)

        text, image = self._adapted(item_seq, text_override)
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        hidden = self.position_embedding(positions)[None].expand(item_seq.shape[0], -1, -1)
        if text is not None:
            hidden = hidden + text
        if image is not None:
            hidden = hidden + image
        if self.item_embedding is not None:
            hidden = hidden + self.item_embedding(item_seq)
        hidden = self.input_dropout(self.input_norm(hidden))
        decoded = self.transformer.decoder(
            hidden, memory, tgt_key_padding_mask=item_seq == 0, memory_key_padding_mask=memory_pad
        )
        seq = F.normalize(gather_last(decoded, lengths), dim=-1)
        return seq, memory, memory_pad

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(batch["item_seq"], batch["item_seq_len"])[0]

    def score_items(self, seq_repr: torch.Tensor, first_id: int, end_id: int) -> torch.Tensor:
        ids = torch.arange(first_id, end_id, device=seq_repr.device)
        return self._fused_scores(seq_repr, ids) / self.config.temperature

    def score_candidates(self, seq_repr: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        vectors, id_vectors = self._item_vectors(ids)  # (B, C, D) per table
        products = lambda vec: torch.einsum("bd,bcd->bc", seq_repr, vec)  # noqa: E731
        cos = torch.stack([products(vec) for vec, _ in vectors.values()], dim=-1)
        avail = torch.stack([mask for _, mask in vectors.values()], dim=-1)
        fused = self._fuse(cos, avail, None if id_vectors is None else products(id_vectors))
        return fused / self.config.temperature

    @staticmethod
    def interest_regulariser(memory: torch.Tensor, memory_pad: torch.Tensor, formula: str = "reference") -> torch.Tensor:
        """The squared norm of each row's pooled encoded interests, / D.

        ``memory`` (B, Q, D) is the encoder output, ``memory_pad`` (B, Q) True at padding slots.
        ``reference``: sum_b ||(n_b / Q) * sum_q M_bq||^2 / D, where n_b counts row b's real
        interests and the inner sum runs over all Q slots, padding included (spec section 4.3).
        ``masked_mean``: mean_b ||mean of row b's real M_bq||^2 / D.
        """
        width = memory.shape[-1]
        real = (~memory_pad).unsqueeze(-1).to(memory.dtype)
        if formula == "reference":
            # The value is the released code's. Its gradient flows through the real slots only:
            # a padding slot's encoder input is the zero row, and when attention dropout drops
            # every key it attends to (half the time in a row with one interest, dropout 0.5)
            # its output is a LayerNorm of a zero vector, whose backward is scaled by 1e6 per
            # LayerNorm (gradients of 1e15 were measured). Padding outputs enter as constants.
            slots = torch.where(memory_pad.unsqueeze(-1), memory.detach(), memory)
            fraction = real.sum(1) / memory.shape[1]  # (B, 1)
            return (fraction * slots.sum(1)).pow(2).sum() / width
        pooled = (memory * real).sum(1) / real.sum(1).clamp(min=1.0)
        return (pooled.pow(2).sum(-1) / width).mean()

    @property
    def reg_weight(self) -> float:
        """gamma: the configured weight, or the default of the configured formula."""
        if self.config.reg_weight is not None:
            return self.config.reg_weight
        return REFERENCE_REG_WEIGHT if self.config.reg_formula == "reference" else MASKED_MEAN_REG_WEIGHT

    def _regulariser(self, memory: torch.Tensor, memory_pad: torch.Tensor) -> torch.Tensor:
        return self.interest_regulariser(memory, memory_pad, self.config.reg_formula)

    # ---------------------------------------------------------------------------------------
    # Losses
    # ---------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.loss_terms(batch).values())

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weighted terms of the stage's loss (their sum is ``loss``)."""
        if self.stage == "pretrain":
            return self.pretrain_loss_terms(batch)
        seq, memory, memory_pad = self.encode(batch["item_seq"], batch["item_seq_len"])
        targets = batch["target"]
        # Rows whose target cannot be scored (inductive, no content) teach nothing.
        usable = self.representable(targets)
        logits = self.without_held_out(self.score_items(seq[usable], 1, self.config.num_items + 1))
        cross_entropy = F.cross_entropy(logits.float(), targets[usable] - 1) if bool(usable.any()) else seq.sum() * 0.0
        return {"cross_entropy": cross_entropy, "interest_reg": self.reg_weight * self._regulariser(memory, memory_pad)}

    def augment(self, item_seq: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None):
        """An augmented view per sequence: item drop (compacted) or text-feature drop."""
        cfg = self.config
        batch, length = item_seq.shape
        device = item_seq.device
        uniform = lambda *shape: torch.rand(*shape, device=device, generator=generator)  # noqa: E731
        real = item_seq > 0
        keep = (uniform(batch, length) >= cfg.item_drop_ratio) & real
        keep[:, 0] = real[:, 0]  # the first item always stays
        # Compact the kept items to the left, preserving order (stable sort on "dropped").
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        dropped_seq = torch.where(keep, item_seq, torch.zeros_like(item_seq)).gather(1, order)
        dropped_len = keep.sum(dim=1)

        use_word_drop = torch.zeros(batch, dtype=torch.bool, device=device)
        if self.text_aug_features.numel() and self.use_text:
            use_word_drop = uniform(batch) >= cfg.item_drop_prob
        aug_seq = torch.where(use_word_drop[:, None], item_seq, dropped_seq)
        aug_len = torch.where(use_word_drop, lengths, dropped_len)
        text_override = use_word_drop[:, None] & real & (uniform(batch, length) < cfg.item_drop_ratio)
        return aug_seq, aug_len, text_override

    def pretrain_loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        seq, memory, memory_pad = self.encode(batch["item_seq"], batch["item_seq_len"])
        targets = batch["target"]
        labels = torch.arange(len(targets), device=targets.device)
        # Inductive: rows whose target has no content are left out (it scores -inf everywhere).
        usable = self.representable(targets)
        if not bool(usable.any()):
            seq_item = seq.sum() * 0.0
        elif cfg.pretrain_negatives == "all_items":
            logits = self.without_held_out(self.score_items(seq[usable], 1, cfg.num_items + 1))
            seq_item = F.cross_entropy(logits.float(), targets[usable] - 1)
        else:
            logits = self._fused_scores(seq, targets) / cfg.temperature  # (B, B)
            if cfg.pretrain_negatives == "in_batch_logq":
                logits = logits - self.target_log_prior[targets][None, :]
            # Other rows whose target is the same item are not negatives.
            same = (targets[:, None] == targets[None, :]) & ~torch.eye(len(targets), dtype=torch.bool, device=targets.device)
            seq_item = F.cross_entropy(logits.float().masked_fill(same, float("-inf"))[usable], labels[usable])

        aug_seq, aug_len, override = self.augment(batch["item_seq"], batch["item_seq_len"])
        aug, aug_memory, aug_pad = self.encode(aug_seq, aug_len, override)
        seq_seq = F.cross_entropy((seq @ aug.T).float() / cfg.temperature, labels)
        reg = self._regulariser(memory, memory_pad) + self._regulariser(aug_memory, aug_pad)
        return {"seq_item": seq_item, "seq_seq": cfg.seqseq_weight * seq_seq, "interest_reg": self.reg_weight * reg}

    # ---------------------------------------------------------------------------------------
    # Interest discovery
    # ---------------------------------------------------------------------------------------
    def _clustered(self, slot: str) -> torch.Tensor:
        """(N+1,) bool: the training items with modality ``slot`` whose tokens the interests are
        clustered from; items held out of training (a cold-start split) are not among them."""
        present = getattr(self, f"{slot}_present")[: self.config.num_items + 1]
        held = self._buffers.get("held_out")
        return present if held is None else present & ~held

    @torch.no_grad()
    def item_tokens(self, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted tokens of every clustered (item, modality) (``_clustered``), and their flat
        (modality, item) keys."""
        tokens, keys = [], []
        for slot, offset in (("text", 0), ("image", 1)):
            if not getattr(self, f"use_{slot}"):
                continue
            present = torch.nonzero(self._clustered(slot)).squeeze(1)
            adapter = getattr(self, f"{slot}_adapter")
            features = getattr(self, f"{slot}_features")
            # The clustering sees the adapters as evaluation does: a ``moe`` gate adds no noise.
            was_training = adapter.training
            adapter.eval()
            for start in range(0, len(present), chunk):
                ids = present[start : start + chunk]
                tokens.append(adapter(features[ids]).float())
                keys.append(ids + offset * (self.config.num_items + 1))
            adapter.train(was_training)
        return torch.cat(tokens), torch.cat(keys)

    @torch.no_grad()
    def refresh_interests(self, accelerator=None) -> dict:
        """Cluster the current adapted tokens and rewrite the interest tables.

        Under several processes the main process clusters and the result is broadcast, so all
        replicas use identical tables.
        """
        cfg = self.config
        device = self.interest_embeddings.device
        tokens, keys = self.item_tokens()
        n_tokens = tokens.shape[0]
        count = num_interests(n_tokens, cfg.interest_ratio)
        labels = torch.zeros(n_tokens, dtype=torch.long, device=device)
        centroids = torch.zeros(count, cfg.hidden_size, device=device)
        main = accelerator is None or accelerator.is_main_process
        if main:
            result = discover_interests(
                tokens.cpu().numpy(), cfg.interest_ratio, cfg.interest_algorithm, cfg.knn_k, cfg.knn_ratio, seed=cfg.seed
            )
            labels = torch.as_tensor(result.labels, device=device)
            centroids = torch.as_tensor(result.centroids, device=device)
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            labels = broadcast(labels, from_process=0)
            centroids = broadcast(centroids, from_process=0)
        self.interest_embeddings.zero_()
        self.interest_embeddings[1 : count + 1] = centroids.to(self.interest_embeddings.dtype)
        self.interest_count.fill_(count)
        self.text_interest.zero_()
        self.image_interest.zero_()
        modality, item = keys // (cfg.num_items + 1), keys % (cfg.num_items + 1)
        self.text_interest[item[modality == 0]] = labels[modality == 0] + 1
        self.image_interest[item[modality == 1]] = labels[modality == 1] + 1
        held = self._buffers.get("held_out")
        if held is not None and bool(held.any()):
            # Items held out of training join the interest of their nearest training item, as
            # items added after training do (``add_items``).
            ids = torch.nonzero(held).squeeze(1)
            for slot in ("text", "image"):
                if getattr(self, f"use_{slot}"):
                    features, present = getattr(self, f"{slot}_features")[ids], getattr(self, f"{slot}_present")[ids]
                    getattr(self, f"{slot}_interest")[ids] = self._nearest_interests(slot, features, present)
        return {"tokens": n_tokens, "interests": count}

    def on_epoch_start(self, epoch: int, accelerator=None) -> None:
        self.refresh_interests(accelerator)
