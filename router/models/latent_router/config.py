"""LatentRouter's configuration and the feature sizes it is built for: a module of their own, so the model's
parts (capsules, layers) can name them without importing the model.

May import: `router.data`, the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from router.data.routing_data import RoutingData

# value of each field added after the first release, for configs (checkpoints) that predate it
LEGACY_VALUES: dict[str, Any] = {"image_token_pool": 0, "max_text_tokens": 0, "side_residual": False}


@dataclass
class LatentRouterConfig:
    """Architecture hyper-parameters; the ``use_*`` switches produce the paper's ablations."""

    hidden: int = 48  # the paper's configuration (the released class defaults to 96)
    n_capsules: int = 7  # C
    n_layers: int = 2  # H communication layers
    n_heads: int = 4
    n_side_tokens: int = 4  # pooled/side features become this many extra query tokens
    dropout: float = 0.2  # 0.1 in the release; 0.2 overfits less on ~1k-query benchmarks
    rho: float = 0.05  # bound of the capsule correction
    tau_feedback: float = 0.25
    # input-token reduction before the capsule attention (its cost is linear in the token count and it is
    # most of the CPU time): a square s x s image-token grid is average-pooled to image_token_pool^2 tokens
    # (mask-aware) and only the first max_text_tokens valid question tokens are kept. 0 switches either off
    image_token_pool: int = 4
    max_text_tokens: int = 16
    eps: float = 1e-3  # sigma floor
    # append RoutingData.pooled to the side features. On ~1k-query benchmarks use_pooled=False generalises
    # better (the wide pooled vector is an overfitting shortcut; the capsules read the same tokens)
    use_pooled: bool = False
    use_capsules: bool = True  # False: one mean-pooled query token instead of C capsules
    use_model_tokens: bool = True  # False: a shared learned token + cost only
    use_communication: bool = True  # False: H = 0
    use_pairwise_bias: bool = True
    use_feedback: bool = True
    # False: "no latent communication" that still reads the query: the model tokens read the capsules once
    # (one read layer), with no model-model self-attention and no feedback (H = 0 is the query-blind variant)
    use_model_exchange: bool = True
    # True: the mean of the side tokens (task labels, question length, image size) is added to every capsule's
    # query-independent start, so the labels reach each capsule directly instead of only competing with the
    # image and question tokens in one attention softmax
    side_residual: bool = False
    distributional: bool = True  # False: point head trained with MSE
    bounded_correction: bool = True

    def __post_init__(self) -> None:
        if self.hidden <= 0 or self.hidden % self.n_heads != 0:
            raise ValueError(f"LatentRouterConfig.hidden={self.hidden} must be positive and divisible by "
                             f"n_heads={self.n_heads}")
        for name in ("n_capsules", "n_heads", "n_side_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"LatentRouterConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_layers < 0:
            raise ValueError(f"LatentRouterConfig.n_layers must be >= 0, got {self.n_layers}")
        if self.image_token_pool < 0 or self.max_text_tokens < 0:
            raise ValueError("LatentRouterConfig needs image_token_pool >= 0 and max_text_tokens >= 0 (0 = off)")
        if self.rho < 0 or self.tau_feedback <= 0 or self.eps <= 0:
            raise ValueError("LatentRouterConfig needs rho >= 0, tau_feedback > 0 and eps > 0")

    @property
    def effective_layers(self) -> int:
        if not self.use_communication:
            return 0
        return self.n_layers if self.use_model_exchange else min(self.n_layers, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentRouterConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"LatentRouterConfig: unknown field(s) {unknown}")
        # checkpoints written before a field existed were trained with its "off" value, not today's default
        return cls(**{**LEGACY_VALUES, **d})


@dataclass
class InputDims:
    """Feature sizes the router was built for (checked at every forward and stored in checkpoints)."""

    img_dim: int  # Di, 0 in text-only mode
    txt_dim: int  # Dq
    side_dim: int  # S (+ D when the pooled vector is appended)
    model_feat_dim: int  # P

    @classmethod
    def from_data(cls, data: RoutingData, cfg: LatentRouterConfig) -> InputDims:
        img = 0 if data.img_tokens is None else int(data.img_tokens.shape[-1])
        side = int(data.side.shape[1]) + (int(data.pooled.shape[1]) if cfg.use_pooled else 0)
        return cls(img, int(data.txt_tokens.shape[-1]), side, int(data.model_feats.shape[-1]))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
