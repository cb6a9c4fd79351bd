"""DiffMM (Jiang, Xia, Wei, Luo, Lin, Huang; ACM MM 2024): multimodal graph diffusion for
recommendation, as the authors' code (HKUDS/DiffMM) does it, in my reading of the spec.

**Diffusion, one model per modality.** A user's training row x_0 (binary, over all N items) is
noised in T (5) steps with a linear schedule beta_t = ``noise_scale`` x linspace(``noise_min``,
``noise_max``, T): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. A denoiser (an MLP N + 10 ->
``denoiser_hidden`` -> N, tanh, with a sinusoidal step embedding) predicts x_0 from (x_t, t).
Its loss, per user row, is the mean squared error weighted by the step's SNR(t-1) - SNR(t)
(1 at t = 0), plus ``consistency_weight`` x a graph-consistency error: the modality view of the
reconstructed row (x_0_hat times the modality's projected item features) against the ID view
of the true row (x_0 times the item ID vectors), both sides detached from the recommender.
At the start of every epoch each user's row runs the reverse chain (from the observed row, T
posterior means, no noise) and the ``rebuild_k`` highest items become the user's edges in the
modality's generated user-item graph G_m (normalised symmetrically).

**Recommender.** For every modality m, with F_m = normalise(W_m f) the projected features (0
for items without the modality) and A the normalised training graph:
- z_m = A [E_user; F_m] (users gather their items' features, items their users' IDs),
- + A [z_m's user rows; E_item] (a second hop, back through the ID vectors),
- + ``ris_adj_lambda`` x G_m [E_user; E_item] (the IDs over the generated graph).
The modalities are fused with learned softmax weights, z = sum_m a_m z_m; LightGCN on A
(``gnn_layers``, sum of layers) from z, plus ``ris_lambda`` x normalise(z), gives the final
vectors; score = dot product. During training every edge of A is kept with probability
``keep_rate`` (kept weights scaled by 1 / keep_rate).

**Loss** = BPR (one uniform negative) + ``reg_weight`` x L2 of the batch's ID vectors +
``ssl_reg`` x cross-modal InfoNCE (temperature ``temperature``, each node against every node of
the other view) on the batch's users and positive items: modality against modality
(``contrast_with: modality``, DiffMM's cl_method 0) or each modality against the final vectors
(``main``, cl_method 1) + the diffusion losses of ``diffusion_users`` of the batch's users.

Deviations from the reference, deliberately: one optimiser and one pass (the reference trains
the denoisers over all users with their own optimiser, rebuilds the graphs, then trains the
recommender, every epoch; here the denoisers train on ``diffusion_users`` users of every batch,
about one pass over the users per epoch at TikTok's batch of 1024, with the same learning rate;
their parameters receive no other gradient, so with Adam this is the same kind of update); the
SNR weights are rescaled to mean 1 over the steps (the ELBO's weights span five orders of
magnitude at these noise levels); the L2 penalty covers the batch's ID vectors, not every
parameter; ``contrast_nodes`` can subsample the InfoNCE anchors (the measured CPU tables do);
the generated graphs are saved with the weights, so an evaluated, saved and resumed
model ranks with the graph it had.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from mmseqrec.models.graph import MultimodalConfig, TopNRecommender, light_gcn, user_item_graph

CONTRAST_VIEWS = ("modality", "main")


@dataclass
class DiffMMConfig(MultimodalConfig):
    """Configuration of DiffMM, ``MultimodalConfig``'s fields and more (defaults: the reference's ``Params.py``; TikTok and Baby settings
    in ``finetune/configs/domains/``).

    Attributes:
        embedding_size (inherited): width of the ID vectors and the projected features (64).
        gnn_layers: LightGCN layers over the training graph (1).
        keep_rate: probability of keeping a training edge in a training step (0.5; 1 keeps all).
        ris_lambda: weight of the normalised fused modality vectors added to the final ones (0.5).
        ris_adj_lambda: weight of the generated graphs' propagation in each modality view (0.2).
        reg_weight: weight of the L2 penalty on the batch's ID vectors (1e-5; TikTok 1e-4).
        ssl_reg: weight of the cross-modal InfoNCE (1e-2).
        temperature: InfoNCE temperature (0.5).
        contrast_with: ``modality`` (modality views against each other) or ``main`` (each against
            the final vectors).
        denoiser_hidden: hidden width of each denoiser (1000).
        step_embedding: width of the sinusoidal step embedding (10).
        diffusion_steps: T, the steps of the forward and reverse chains (5).
        noise_scale: scale of the beta schedule (0.1).
        noise_min: first beta before scaling (1e-4).
        noise_max: last beta before scaling (0.02).
        rebuild_k: generated edges per user and modality (1).
        consistency_weight: weight of the graph-consistency error (DiffMM's e_loss; 0.1).
        diffusion_users: users of each batch whose rows train the denoisers (256).
        contrast_nodes: at most this many of the batch's users, and of its positive items, are
            the anchors of the InfoNCE (0: all of them, as the reference). Each anchor is
            contrasted with every node, so this bounds the cost of the term on a CPU.
    """

    gnn_layers: int = 1
    keep_rate: float = 0.5
    ris_lambda: float = 0.5
    ris_adj_lambda: float = 0.2
    reg_weight: float = 1e-5
    ssl_reg: float = 1e-2
    temperature: float = 0.5
    contrast_with: str = "modality"
    denoiser_hidden: int = 1000
    step_embedding: int = 10
    diffusion_steps: int = 5
    noise_scale: float = 0.1
    noise_min: float = 1e-4
    noise_max: float = 0.02
    rebuild_k: int = 1
    consistency_weight: float = 0.1
    diffusion_users: int = 256
    contrast_nodes: int = 0


class Denoiser(nn.Module):
    """Predicts a user's clean row x_0 from the noised row x_t and the step t."""

    def __init__(self, num_items: int, hidden: int, step_width: int):
        super().__init__()
        self.step_width = step_width
        self.step_projection = nn.Linear(step_width, step_width)
        self.encode = nn.Linear(num_items + step_width, hidden)
        self.decode = nn.Linear(hidden, num_items)
        for layer in (self.step_projection, self.encode, self.decode):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def step_features(self, steps: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of the step numbers (the transformer's position encoding)."""
        half = self.step_width // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=steps.device, dtype=torch.float32) / half)
        angles = steps.float()[:, None] * frequencies[None]
        out = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
        return F.pad(out, (0, self.step_width - out.shape[1]))

    def forward(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        step = self.step_projection(self.step_features(steps))
        return self.decode(torch.tanh(self.encode(torch.cat([x, step], dim=1))))


def _at_most(nodes: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` of ``nodes`` drawn at random (all of them when ``count`` is 0 or not smaller)."""
    if count <= 0 or nodes.shape[0] <= count:
        return nodes
    return nodes[torch.randperm(nodes.shape[0], device=nodes.device)[:count]]


def info_nce(view: torch.Tensor, other: torch.Tensor, nodes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each node of ``nodes`` should match itself in ``other`` better than every other node."""
    anchors = F.normalize(view[nodes], dim=1)
    keys = F.normalize(other, dim=1)
    logits = anchors @ keys.T / temperature
    return F.cross_entropy(logits, nodes)


class DiffMM(TopNRecommender, PyTorchModelHubMixin, library_name="mmseqrec", tags=["general-recommendation", "multimodal", "diffusion", "diffmm"]):
    model_type = "diffmm"
    config_class = DiffMMConfig

    def __init__(self, config: DiffMMConfig):
        super().__init__(config)
        if config.contrast_with not in CONTRAST_VIEWS:
            raise ValueError(f"DiffMMConfig.contrast_with must be one of {', '.join(CONTRAST_VIEWS)}, got '{config.contrast_with}'")
        if not 0 < config.keep_rate <= 1:
            raise ValueError(f"DiffMMConfig.keep_rate must lie in (0, 1], got {config.keep_rate}")
        d, modalities = config.embedding_size, len(config.feature_dims)
        self.projections = nn.ModuleList(nn.Linear(dim, d) for dim in config.feature_dims)
        self.modality_weights = nn.Parameter(torch.ones(modalities))
        self.denoisers = nn.ModuleList(Denoiser(config.num_items, config.denoiser_hidden, config.step_embedding) for _ in range(modalities))
        # The generated graphs' edges (users x rebuild_k items, -1 before the first rebuild),
        # saved with the model (see the module docstring).
        for k in range(modalities):
            self.register_buffer(f"generated_{k}", torch.full((config.num_users, config.rebuild_k), -1, dtype=torch.long))
        betas = config.noise_scale * torch.linspace(config.noise_min, config.noise_max, config.diffusion_steps, dtype=torch.float64)
        abar = torch.cumprod(1 - betas, dim=0)
        abar_before = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        snr = abar / (1 - abar)
        weights = torch.cat([torch.ones(1, dtype=torch.float64), torch.cat([snr.new_ones(1) * snr[0], snr[:-1]])[1:] - snr[1:]])
        schedule = {
            "abar": abar,
            "step_weight": weights / weights.mean(),
            # posterior mean of x_{t-1} given x_t and x_0: coef_start x_0 + coef_now x_t
            "coef_start": betas * abar_before.sqrt() / (1 - abar),
            "coef_now": (1 - abar_before) * (1 - betas).sqrt() / (1 - abar),
        }
        for name, values in schedule.items():
            self.register_buffer(f"schedule_{name}", values.float(), persistent=False)
        self._generated_graphs: list[torch.Tensor] | None = None

    def prepare_domain(self, domain) -> None:
        cfg = self.config
        values = torch.ones(self.train_users.shape[0], device=self.train_users.device)
        self.register_buffer(
            "train_rows", torch.sparse_coo_tensor(torch.stack([self.train_users, self.train_items]), values, (cfg.num_users, cfg.num_items),
                                                  check_invariants=False).coalesce(), persistent=False)
        self._generated_graphs = None

    # --- diffusion --------------------------------------------------------------------------
    def rows_of(self, users: torch.Tensor) -> torch.Tensor:
        """(B, N) the users' training rows (1 where they interacted)."""
        return self.train_rows.index_select(0, users).to_dense()

    def diffusion_loss(self, k: int, users: torch.Tensor, item_features: torch.Tensor) -> torch.Tensor:
        """The denoiser's loss of modality k on these users' rows (see the module docstring)."""
        start = self.rows_of(users)
        steps = torch.randint(0, self.config.diffusion_steps, (users.shape[0],), device=users.device)
        abar = self.schedule_abar[steps][:, None]
        noised = abar.sqrt() * start + (1 - abar).sqrt() * torch.randn_like(start)
        predicted = self.denoisers[k](noised, steps)
        error = (predicted - start).pow(2).mean(dim=1)
        consistency = (predicted @ item_features.detach() - start @ self.item_embedding.weight.detach()).pow(2).mean(dim=1)
        return (self.schedule_step_weight[steps] * error).mean() + self.config.consistency_weight * consistency.mean()

    @torch.no_grad()
    def rebuild_generated(self, chunk: int = 1024) -> None:
        """Run every user's row through modality k's reverse chain; keep the top ``rebuild_k`` items."""
        cfg = self.config
        for k, denoiser in enumerate(self.denoisers):
            table = getattr(self, f"generated_{k}")
            for first in range(0, cfg.num_users, chunk):
                users = torch.arange(first, min(first + chunk, cfg.num_users), device=table.device)
                x = self.rows_of(users)
                for t in reversed(range(cfg.diffusion_steps)):
                    steps = torch.full((users.shape[0],), t, device=x.device, dtype=torch.long)
                    start = denoiser(x, steps)
                    x = self.schedule_coef_start[t] * start + self.schedule_coef_now[t] * x if t > 0 else start
                table[users] = x.topk(cfg.rebuild_k, dim=1).indices
        self._generated_graphs = None

    def generated_graphs(self) -> list[torch.Tensor]:
        if self._generated_graphs is None:
            if bool((self.generated_0 < 0).any()):
                self.rebuild_generated()
            cfg, graphs = self.config, []
            users = torch.arange(cfg.num_users, device=self.generated_0.device).repeat_interleave(cfg.rebuild_k)
            for k in range(len(self.denoisers)):
                graphs.append(user_item_graph(users, getattr(self, f"generated_{k}").reshape(-1), cfg.num_users, cfg.num_items))
            self._generated_graphs = graphs
        return self._generated_graphs

    def on_epoch_start(self, epoch: int, accelerator=None) -> None:
        self.rebuild_generated()

    # --- recommender ------------------------------------------------------------------------
    def training_graph(self) -> torch.Tensor:
        """The normalised training graph, with edge dropout while training."""
        graph = self.ui_graph
        if not self.training or self.config.keep_rate >= 1:
            return graph
        keep = torch.rand(graph.values().shape[0], device=graph.device) < self.config.keep_rate
        indices = graph.indices()[:, keep]
        values = graph.values()[keep] / self.config.keep_rate
        return torch.sparse_coo_tensor(indices, values, graph.shape, check_invariants=False).coalesce()

    def propagate(self) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(final (U+N, D), per-modality views z_m (U+N, D), projected features F_m (N, D))."""
        self._require_graph()
        cfg = self.config
        graph = self.training_graph()
        ids = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        users = self.user_embedding.weight
        views, projected = [], []
        for projection, (values, present), generated in zip(self.projections, self.features(), self.generated_graphs()):
            features = F.normalize(projection(values), dim=1) * present[:, None].to(values.dtype)
            view = torch.sparse.mm(graph, torch.cat([users, features]))
            view = view + torch.sparse.mm(graph, torch.cat([view[: cfg.num_users], self.item_embedding.weight]))
            view = view + cfg.ris_adj_lambda * torch.sparse.mm(generated, ids)
            views.append(view)
            projected.append(features)
        weights = torch.softmax(self.modality_weights, dim=0)
        fused = sum(w * view for w, view in zip(weights, views))
        final = light_gcn(graph, fused, cfg.gnn_layers, combine="sum") + cfg.ris_lambda * F.normalize(fused, dim=1)
        return final, views, projected

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        final, _, _ = self.propagate()
        return final[: self.config.num_users], final[self.config.num_users :]

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        final, views, projected = self.propagate()
        u, pos = batch["user_id"], batch["pos_item"] - 1
        users, items = final[: cfg.num_users], final[cfg.num_users :]
        terms = self.bpr_terms(users, items, batch, cfg.reg_weight)
        users_in, items_in = _at_most(torch.unique(u), cfg.contrast_nodes), _at_most(torch.unique(pos), cfg.contrast_nodes)
        if cfg.contrast_with == "main":
            pairs = [(view, final) for view in views]
        else:
            pairs = [(views[a], views[b]) for a in range(len(views)) for b in range(a + 1, len(views))]
        if pairs:
            terms["contrast"] = cfg.ssl_reg * sum(
                info_nce(a[: cfg.num_users], b[: cfg.num_users], users_in, cfg.temperature)
                + info_nce(a[cfg.num_users :], b[cfg.num_users :], items_in, cfg.temperature)
                for a, b in pairs
            )
        chosen = _at_most(torch.unique(u), cfg.diffusion_users)
        terms["diffusion"] = sum(self.diffusion_loss(k, chosen, features) for k, features in enumerate(projected))
        return terms
