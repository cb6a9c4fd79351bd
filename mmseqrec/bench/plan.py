"""What ``mmseqrec bench`` measures: the synthetic scales and the list of measurements.

Synthetic domains stand in for the real ones at their real sizes (``prepare synthetic
--scale``; one scale multiplies users and items together, so the users match and the item
counts land near, not on, the real ones; the report gives the counts that ran):

- ``scientific``: syn-Scientific at scale 27 (real Scientific: 8.4k users, 4.4k items);
- ``office``: syn-Office at scale 270 (real Office: 87k users, 26k items, 423k train rows);
- ``fhckm``: the five synthetic sources at scale 136 (real FHCKM mixture: 1.36M users, 447k
  items, about 10M train rows).

``--quick`` measures at the Scientific scale only, with few steps, pretraining batches of 1024
instead of 4096, and small clustering and extraction sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmseqrec.data.sources.synthetic import SOURCE_DOMAINS

FINETUNE_MODELS = ("sasrec", "bert4rec", "unisrec", "mmmlp", "missrec")
PRETRAIN_MODELS = ("missrec", "unisrec")


@dataclass(frozen=True)
class Scale:
    """A synthetic stand-in for a real dataset: ``domains`` generated at ``scale``."""

    name: str
    domains: tuple[str, ...]
    scale: float
    real: str

    @property
    def folders(self) -> list[str]:
        return [f"syn-{d}" for d in self.domains]

    def data_subdir(self) -> str:
        return f"bench-scale{self.scale:g}"


SCALES = {
    "scientific": Scale("scientific", ("Scientific",), 27, "Scientific: 8.4k users, 4.4k items"),
    "office": Scale("office", ("Office",), 270, "Office: 87k users, 26k items, 423k train rows"),
    "fhckm": Scale("fhckm", SOURCE_DOMAINS, 136, "FHCKM: 1.36M users, 447k items, ~10M train rows"),
}


@dataclass
class Measurement:
    """One measurement: ``part`` (a module of ``child.PARTS``), its parameters, and the scale
    whose data it needs (None: no data)."""

    part: str
    params: dict
    scale: str | None = None
    label: str = ""
    extra: dict = field(default_factory=dict)


def make_plan(quick: bool, scales: list[str]) -> list[Measurement]:
    """The measurements of a run over ``scales`` (data parameters are filled in by the runner)."""
    steps = {"steps": 2, "warmup": 1} if quick else {"steps": 10, "warmup": 2}
    plan: list[Measurement] = []
    for name in scales:
        scale = SCALES[name]
        if name != "fhckm":
            domain = scale.folders[0]
            for model in FINETUNE_MODELS:
                plan.append(Measurement("train", {"model": model, "domains": [domain], "stage": "finetune", **steps}, name))
            # The default pretraining batch (4096) needs about 10 GB with MISSRec on a CPU; the
            # quick run uses 1024, which a machine shared with other jobs can hold.
            smaller = {"overrides": ["train.batch_size=1024"]} if quick else {}
            for model in PRETRAIN_MODELS:
                plan.append(Measurement("train", {"model": model, "domains": [domain], "stage": "pretrain", **steps, **smaller}, name))
            for model in ("sasrec", "missrec"):
                plan.append(Measurement("evaluate", {"model": model, "domain": domain}, name))
        else:
            # At 1.36M users a CPU can afford the load and a few pretraining steps, not epochs.
            for model in PRETRAIN_MODELS:
                plan.append(Measurement("train", {"model": model, "domains": scale.folders, "stage": "pretrain",
                                                  "steps": 3, "warmup": 1}, name))
        plan.append(Measurement("load", {"domains": scale.folders}, name))
    sizes = (10_000,) if quick else (10_000, 100_000, 1_000_000)
    for tokens in sizes:
        for algorithm in ("dpc_knn", "kmeans"):
            plan.append(Measurement("interest", {"tokens": tokens, "algorithm": algorithm}))
    plan.append(Measurement("extract", {"texts": 64, "images": 16} if quick else {"texts": 1024, "images": 256}))
    return plan
