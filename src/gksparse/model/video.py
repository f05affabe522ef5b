"""The one model that every method of `gksparse.model.methods` is a configuration of.

A model holds an encoder (per-frame CNN, optionally followed by ConvMinimalRNN2d, or a
pretrained VGG19), a linear transposed-convolution decoder used only for pretraining, and
a classifier head. Videos are `(N, T, C, H, W)`; nothing depends on `T`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.fftconv import use_fft
from ..ops.lifetime import winners
from ..ops.sparsebackward import sparse_backward_convs, uses_sparse_backward
from ..ops.sparsity import group_norms, keep_winners
from .layers import FrameConv2d, FrameConvTranspose2d, frames, videos
from .methods import StageName, check_groups, get_method
from .recurrence import ConvMinimalRNN2d


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint (plain types only)."""

    method: str
    in_channels: int
    height: int
    width: int
    classes: int
    filters: int = 64
    enc_kernel: int = 3
    dec_kernel: int = 11
    groups: int = 16
    k_spatial: int = 1
    k_lifetime: int = 1
    head_dropout: float = 0.3
    vgg_weights: str | None = "IMAGENET1K_V1"  # torchvision weights name; None: random init
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. dataset name)

    def __post_init__(self) -> None:
        check_groups(self.method, self.filters, self.groups)
        if self.k_spatial < 1 or self.k_lifetime < 1:
            raise ValueError("k_spatial and k_lifetime must be at least 1.")

    def to_dict(self) -> dict:
        return asdict(self)


class ConvEncoder(nn.Module):
    """Three per-frame 'same' convolutions with ReLU, optionally then ConvMinimalRNN2d.

    `(N, T, C_in, H, W)` -> `(N, T, F, H, W)`. `sparse_backward` (without the recurrence):
    'auto' (default) runs the convolutions' backward only where the gradient reaches when it
    reaches few positions (a winner-take-all code; `gksparse.ops.sparsebackward`) on the
    CPU, and the dense backward on a GPU; True forces it on any device, False is the dense
    backward. Same gradients within float rounding; the pretraining step measured 0.70x the
    dense one for Rotated MNIST groupwtacnn (fp32, quiet 2-core CPU; docs/speed.md).
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: int,
        recurrent: bool,
        input_dropout: float,
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout else nn.Identity()
        self.convs = nn.ModuleList(
            FrameConv2d(c, filters, kernel_size) for c in (in_channels, filters, filters)
        )
        self.rnn = ConvMinimalRNN2d(filters, kernel_size) if recurrent else None
        if self.rnn is None:  # a WTA code's gradient reaches only its winners' pixels
            self.convs[-1].sparse_grad = True
        self.sparse_backward: bool | str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x)
        params = [t for conv in self.convs for t in (conv.weight, conv.bias)]
        if (
            self.rnn is None
            and uses_sparse_backward(self.sparse_backward, x.device)
            and torch.is_grad_enabled()
            and any(t is not None and t.requires_grad for t in [x, *params])
        ):  # the gradient decides per layer whether the sparse path pays
            layers = [conv.forward_frames for conv in self.convs]
            ffts = [use_fft(conv.fft, conv.weight, x.device) for conv in self.convs]
            return videos(sparse_backward_convs(frames(x), layers, params, ffts), x.shape[0])
        for conv in self.convs:
            x = F.relu(conv(x))
        return x if self.rnn is None else self.rnn(x)


def stretch_frames(f: torch.Tensor) -> torch.Tensor:
    """The reference's resize helper for VGG19: each frame stretched to its own min..max and
    quantised to 0..255 as `uint8` does (truncation), then scaled back to [0, 1].

    f: frames `(B, C, H, W)`. A constant frame becomes 0. Returns `(B, C, H, W)` values in
    {0, 1/255, ..., 1}; no gradient flows through the quantisation (VGG19's input is data).
    """
    lo = f.amin(dim=(1, 2, 3), keepdim=True)
    span = f.amax(dim=(1, 2, 3), keepdim=True) - lo
    scaled = torch.where(span > 0, (f - lo) / span.clamp_min(torch.finfo(f.dtype).tiny), 0.0)
    return torch.floor(scaled.detach() * 255) / 255


class VGG19Encoder(nn.Module):
    """torchvision's VGG19 convolutional part per frame: `(N, T, C, H, W)` -> `(N, T, 512, h, w)`.

    As the reference fed it: grey frames repeated to 3 channels, zero-padded bottom/right to
    at least 32x32, each frame stretched to its own range and quantised to 0..255
    (`stretch_frames`), then normalised with ImageNet's mean and std as torchvision's weights
    expect. The frames must not be whitened (the reference used no ZCA for vgg19).
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: str | None) -> None:
        super().__init__()
        try:
            import torchvision
        except ImportError as e:
            raise ImportError(
                "the vgg19 method needs torchvision; install it with: pip install 'gksparse[vgg]'"
            ) from e
        self.features = torchvision.models.vgg19(weights=weights).features
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    @property
    def last_conv(self) -> nn.Conv2d:
        """Block 5, conv 4: the only part trained end-to-end."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        f = frames(x)
        if f.shape[1] == 1:
            f = f.expand(-1, 3, -1, -1)
        f = F.pad(f, (0, max(0, 32 - f.shape[3]), 0, max(0, 32 - f.shape[2])))
        f = stretch_frames(f)
        return videos(self.features((f - self.mean) / self.std), n)


class ClassifierHead(nn.Module):
    """Per frame: 2x2 max pooling (not for VGG19), flatten, dropout, dense; mean over frames.

    `(N, T, F, H, W)` features and an optional `(N, T)` validity mask -> `(N, classes)` logits.
    """

    def __init__(self, in_features: int, classes: int, dropout: float, pool: bool) -> None:
        super().__init__()
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(in_features, classes)
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """Per-frame inputs of the dense layer: `(N, T, F, H, W)` -> `(N, T, D)`."""
        f = frames(h)
        if self.pool:
            f = F.max_pool2d(f, 2)
        return videos(f.flatten(1), h.shape[0])

    def logits(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(N, T, D)` features -> `(N, classes)`: dropout, dense, mean over real frames."""
        return frame_mean(self.dense(self.dropout(feats)), mask)  # (N, T, classes) -> (N, classes)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.features(h), mask)


def frame_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean over the real frames of each video: `(N, T, D)` and `(N, T)` -> `(N, D)`.

    mask: True for real frames; None: all real. A video without real frames gives 0.
    """
    if mask is None:
        return values.mean(dim=1)
    m = mask.to(values.dtype).unsqueeze(-1)
    return (values * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)


def _frame_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if mask is None else mask.to(like.dtype)[:, :, None, None, None]


class VideoModel(nn.Module):
    """Encoder, decoder and classifier head of one method (see `METHODS`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.method = m = get_method(config.method)
        if m.backbone == "vgg19":
            self.encoder: nn.Module = VGG19Encoder(config.vgg_weights)
            fh, fw = max(config.height, 32) // 32, max(config.width, 32) // 32
            head_in = 512 * fh * fw
        else:
            self.encoder = ConvEncoder(
                config.in_channels, config.filters, config.enc_kernel, m.recurrent, m.input_dropout
            )
            head_in = config.filters * (config.height // 2) * (config.width // 2)
        self.decoder = (
            FrameConvTranspose2d(config.filters, config.in_channels, config.dec_kernel)
            if m.target
            else None
        )
        if self.decoder is not None and m.sparsity == "none":
            self.decoder.sparse = False  # a dense code: skip the sparse decoder's occupancy test
        self.head = ClassifierHead(
            head_in, config.classes, config.head_dropout, m.backbone != "vgg19"
        )
        # False: the general top-k path for k = 1 too (the same masks; for benchmarks)
        self.fast_masks = True

    # -- pretraining ---------------------------------------------------------------------
    def sparsify(
        self, code: torch.Tensor, mask: torch.Tensor | None = None, global_lifetime: bool = False
    ) -> torch.Tensor:
        """The WTA step of pretraining: spatial, then lifetime. `(N, T, F, H, W)` -> same.

        Padded frames (mask False) are zeroed first so they never win a lifetime contest.
        global_lifetime: under a process group (torchrun), rank the lifetime step over the
        whole global batch (`gksparse.ops.lifetime`), not this process's shard.
        """
        return self._sparse_code(code, mask, global_lifetime)[0]

    def _sparse_code(
        self, code: torch.Tensor, mask: torch.Tensor | None, global_lifetime: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(`sparsify`'s code, its keep mask: bool `(N, T, F, H, W)` for plain sparsity,
        `(N, T, groups, H, W)` for group sparsity, None for a dense code)."""
        fm = _frame_mask(mask, code)
        if fm is not None:
            code = code * fm
        c = self.config
        steps = ((c.k_spatial, (3, 4)), (c.k_lifetime, (0, 1)))
        sparsity = self.method.sparsity
        keep = winners(
            code, sparsity, steps, c.groups, global_batch=global_lifetime, fast=self.fast_masks
        )
        return keep_winners(code, keep, sparsity), keep

    def reconstruct(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, global_lifetime: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pretraining forward pass: `(N, T, C, H, W)` -> (decoder output, sparse code).

        The output at frame t reconstructs frame t ('reconstruct') or predicts frame t+1
        ('next'); the code is `(N, T, F, H, W)`. `global_lifetime`: see `sparsify`.
        """
        if self.decoder is None:
            raise ValueError(f"method {self.config.method!r} has no pretraining (no decoder).")
        code, keep = self._sparse_code(self.encoder(x), mask, global_lifetime)
        # the decoder finds its occupied pixels in the keep mask (1/16 of the code's size
        # for groups of 4), and only where it goes sparse
        return self.decoder(code, keep), code

    def pretrain_loss(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, global_lifetime: bool = False
    ) -> torch.Tensor:
        """Mean squared error of the pretraining target over real frames (plus slowness)."""
        out, code = self.reconstruct(x, mask, global_lifetime)
        if self.method.target == "next":
            out, x = out[:, :-1], x[:, 1:]
            if mask is not None:
                mask = mask[:, :-1] & mask[:, 1:]
        loss = masked_mse(out, x, mask)
        if self.method.slowness:
            g = group_norms(code, self.config.groups, channel_dim=2)
            pair = None if mask is None else mask[:, 1:] & mask[:, :-1]
            loss = loss + self.method.slowness * masked_mean((g[:, 1:] - g[:, :-1]).abs(), pair)
        return loss

    # -- classification ------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Classification: `(N, T, C, H, W)` (and `(N, T)` mask) -> `(N, classes)` logits."""
        return self.head(self.encoder(x), mask)

    def trainable(self, stage: StageName) -> list[nn.Parameter]:
        """The parameters a protocol stage trains: pretraining, stacked head, end-to-end."""
        if stage == "pretrain":
            if not self.method.pretrained:  # randominit*: the decoder stays random
                raise ValueError(f"method {self.config.method!r} has no pretraining.")
            return [*self.encoder.parameters(), *self.decoder.parameters()]
        if stage == "stacked":
            return list(self.head.parameters())
        if stage == "finetune":
            enc = self.encoder.last_conv if self.method.backbone == "vgg19" else self.encoder
            return [*enc.parameters(), *self.head.parameters()]
        raise ValueError(f"unknown stage {stage!r}; use 'pretrain', 'stacked' or 'finetune'.")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` `(N, T, ...)` over the entries of real frames (`mask` `(N, T)`)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype).view(*mask.shape, *([1] * (values.ndim - 2)))
    return (values * m).sum() / (m.sum() * values[0, 0].numel()).clamp_min(1)


def masked_mse(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over all pixels of real frames, computed in fp32."""
    return masked_mean((out.float() - target.float()).square(), mask)


def build_model(config: ModelConfig | dict) -> VideoModel:
    """A freshly initialised model for `config` (a ModelConfig or its dict form)."""
    if isinstance(config, dict):
        config = ModelConfig(**config)
    return VideoModel(config)
