"""The embedding network: a ResNet-50 trunk, global average pooling, a linear projection, L2 norm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

TRUNK_FEATURES = {"resnet50": 2048}
# How the trunk first shrinks an image: ImageNet's 7×7 stride-2 convolution and max-pool (a quarter of the
# side), or a 3×3 stride-1 convolution alone, which keeps small images' detail to the last stage.
STEMS = ("imagenet", "small")


class EmbeddingNet(nn.Module):
    """Maps a batch of images (N×3×H×W) to L2-normalised embeddings (N×embedding_size)."""

    def __init__(self, backbone: str = "resnet50", embedding_size: int = 128, stem: str = "imagenet") -> None:
        super().__init__()
        if backbone not in TRUNK_FEATURES:
            raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(TRUNK_FEATURES)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; known: {', '.join(STEMS)}")
        self.backbone, self.embedding_size, self.stem = backbone, embedding_size, stem
        # torchvision's own module keeps its state-dict keys, so ImageNet weights load unchanged;
        # its avgpool is the global average pooling, and the classifier is dropped.
        self.trunk = torchvision.models.resnet50(weights=None)
        if stem == "small":
            self.trunk.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.trunk.maxpool = nn.Identity()
        self.trunk.fc = nn.Identity()
        self.projection = nn.Linear(TRUNK_FEATURES[backbone], embedding_size)

    def model_args(self) -> dict:
        """The keyword arguments that rebuild this network (stored in checkpoints)."""
        return {"backbone": self.backbone, "embedding_size": self.embedding_size, "stem": self.stem}

    def load_trunk_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load torchvision ResNet weights into the trunk, ignoring its ImageNet classifier (and, with the
        small stem, ImageNet's 7×7 first convolution, which the 3×3 one cannot take)."""
        dropped = ("fc.", "conv1.") if self.stem == "small" else ("fc.",)
        trunk_state = {k: v for k, v in state_dict.items() if not k.startswith(dropped)}
        missing, unexpected = self.trunk.load_state_dict(trunk_state, strict=False)
        if self.stem == "small":
            missing = [key for key in missing if not key.startswith("conv1.")]
        if missing or unexpected:
            raise ValueError(
                f"not a torchvision {self.backbone} state dict: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )

    def start_residual_blocks_as_identity(self) -> None:
        """Zero the last BatchNorm scale of every bottleneck, so each block starts as the identity.

        For training from random weights only: a deep ResNet then trains like a shallow one at
        first, which is what lets a short CPU budget get somewhere (Goyal et al., 2017)."""
        for module in self.trunk.modules():
            if isinstance(module, torchvision.models.resnet.Bottleneck):
                nn.init.zeros_(module.bn3.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk(images)
        return F.normalize(self.projection(features).float(), dim=1)
