"""The table of named methods (METHOD.md sections 4 and 5.1): each method is a configuration
of the one video model (`gksparse.model.video`), not a subclass. Plain data, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StageName = Literal["pretrain", "stacked", "finetune"]


@dataclass(frozen=True)
class Method:
    """One row of the methods table (METHOD.md sections 4 and 5.1)."""

    backbone: Literal["conv", "vgg19"]
    recurrent: bool  # ConvMinimalRNN2d after the convolutions
    input_dropout: float  # dropout on the input pixels (denoising methods)
    sparsity: Literal["none", "plain", "group"]  # WTA step used in pretraining
    # What the decoder rebuilds (frame t, or predicts frame t+1); None: no decoder at all
    target: Literal["reconstruct", "next"] | None
    pretrained: bool = True  # False: the decoder stays random (the reference's randominit*)
    clipnorm: float = 0.0  # the reference's Keras clipnorm for all three stages; 0: off
    whiten: bool = True  # ZCA where the dataset whitens (the reference never did for vgg19)
    slowness: float = 0.0  # weight of mean |g_t - g_{t-1}| on the sparse code's group norms


METHODS: dict[str, Method] = {
    "wtacnn": Method("conv", False, 0.0, "plain", "reconstruct"),
    "wtacrnn": Method("conv", True, 0.0, "plain", "next", clipnorm=1.0),
    "groupwtacnn": Method("conv", False, 0.0, "group", "reconstruct"),
    "groupwtacrnn": Method("conv", True, 0.0, "group", "next", clipnorm=1.0),
    "denoisingcnn": Method("conv", False, 0.3, "none", "reconstruct"),
    "denoisingcrnn": Method("conv", True, 0.3, "none", "next"),
    "randominitcnn": Method("conv", False, 0.0, "none", "reconstruct", pretrained=False),
    "randominitcrnn": Method("conv", True, 0.0, "none", "next", pretrained=False, clipnorm=1.0),
    "vgg19": Method("vgg19", False, 0.0, "none", None, pretrained=False, whiten=False),
    "slowgroupwtacnn": Method("conv", False, 0.0, "group", "reconstruct", slowness=1e-4),
}


def get_method(name: str) -> Method:
    """The row of `METHODS` called `name`; a ValueError listing the names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}.") from None


def check_groups(method: str, filters: int, groups: int) -> None:
    """A ValueError (one sentence) unless `groups` divides `filters` for a group method."""
    if get_method(method).sparsity == "group" and (groups < 1 or filters % groups):
        raise ValueError(
            f"groups={groups} must divide filters={filters}; choose a divisor of {filters}."
        )
