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

    @torch.no_grad()
    def start_stem_from_patches(self, images: torch.Tensor) -> int:
        """Point the first convolution's filters along ± the principal directions of the images' patches,
        keeping each filter's random norm; returns how many filters were set.

        For training from random weights only: the stem then passes on the most varied directions of the
        catalog's pixels from the first step instead of random ones (patch whitening, as in Coates and Ng,
        2011, and the CIFAR-10 speed runs). Directions with no variance (a gray catalog's copies of one
        channel) are skipped; the filters left over keep their random weights.
        """
        if len(images) == 0:
            raise ValueError("start_stem_from_patches needs at least one image")
        conv = self.trunk.conv1
        size = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        products, sums, total = torch.zeros(size, size, dtype=torch.float64), torch.zeros(size, dtype=torch.float64), 0
        for chunk in images.split(64):
            # Each output pixel's receptive field, as the convolution sees it (same padding and stride).
            patches = F.unfold(chunk.float(), conv.kernel_size, padding=conv.padding, stride=conv.stride)
            patches = patches.transpose(1, 2).reshape(-1, size).cpu().double()
            products, sums, total = products + patches.T @ patches, sums + patches.sum(0), total + len(patches)
        mean = sums / total
        variances, directions = torch.linalg.eigh(products / total - torch.outer(mean, mean))
        variances, directions = variances.flip(0), directions.flip(1)
        count = min(conv.out_channels // 2, int((variances > 1e-6 * variances[0]).sum()))
        if count == 0:
            return 0
        chosen = directions[:, :count].T.to(conv.weight)
        weight = conv.weight.reshape(conv.out_channels, -1).clone()
        filters = torch.cat([chosen, -chosen])  # both signs, so the ReLU after the stem drops neither
        weight[: 2 * count] = filters * weight[: 2 * count].norm(dim=1, keepdim=True)
        conv.weight.copy_(weight.view_as(conv.weight))
        return 2 * count

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk(images)
        return F.normalize(self.projection(features).float(), dim=1)
