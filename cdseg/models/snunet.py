"""SNUNet-CD (Fang, Li, Shao and Li, "SNUNet-CD: A Densely Connected Siamese Network for Change
Detection of VHR Images", IEEE GRSL 2021): a Siamese encoder, a densely connected nested (UNet++)
decoder whose every node sees both dates' features of its scale, and the ensemble channel attention
module (ECAM) over the four outputs of the finest scale.
"""

from __future__ import annotations

import torch
from torch import nn

from cdseg.models.blocks import ChangeDetector, init_prior


class NestedBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the first convolution's output, -> ReLU (the
    published block's residual starts after its first convolution)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(x)))) + x)


class ChannelAttention(nn.Module):
    """(B, C, H, W) -> (B, C, 1, 1) weights: sigmoid(MLP(avg-pool) + MLP(max-pool)), one shared MLP
    with a C / ratio bottleneck."""

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        hidden = max(channels // ratio, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x.mean((-2, -1), keepdim=True)) + self.mlp(x.amax((-2, -1), keepdim=True)))


class SNUNet(ChangeDetector):
    """SNUNet-CD with ECAM.

    Node ``x[i][j]`` (scale i, j-th along the nested path) takes both dates' encoder features of scale
    i, the earlier nodes of that scale and the upsampled node ``x[i+1][j-1]``. As published, the
    upsampled encoder features of the coarser scale are date B's, so the network is not symmetric in
    A and B.

    Args:
        in_channels: bands per date.
        base: width of the finest scale; scales are base * (1, 2, 4, 8, 16) (16 and 32 as published).
        prior: initial change probability of the head (:func:`cdseg.models.blocks.init_prior`).
    """

    stride = 16  # four 2x poolings

    def __init__(self, in_channels: int = 3, base: int = 16, prior: float | None = 0.05) -> None:
        super().__init__()
        w = [base * 2**i for i in range(5)]
        self.encoder = nn.ModuleList(NestedBlock(c_in, c) for c_in, c in zip([in_channels, *w[:-1]], w, strict=True))
        self.pool = nn.MaxPool2d(2)
        # Nodes x[i][j] for j >= 1 and i + j <= 4; up[i][j] upsamples x[i][j] for the node x[i-1][j+1].
        self.nodes = nn.ModuleDict(
            {f"{i}_{j}": NestedBlock((j + 1) * w[i] + w[i + 1], w[i]) for i in range(4) for j in range(1, 5 - i)}
        )
        self.ups = nn.ModuleDict(
            {f"{i}_{j}": nn.ConvTranspose2d(w[i], w[i], 2, stride=2) for i in range(1, 5) for j in range(5 - i)}
        )
        self.attention = ChannelAttention(4 * base, ratio=16)  # over the four outputs
        self.attention_intra = ChannelAttention(base, ratio=4)  # over their sum
        self.head = nn.Conv2d(4 * base, 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.head:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Not the head: the published fan-out init gives its one output a weight std of sqrt(2), whose
        # logits (spread 10 to 20 at the start) would swamp the prior and saturate the first steps' sigmoid.
        init_prior(self.head, prior)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        x = torch.cat([a, b], dim=0)  # both dates through the shared encoder in one batch
        enc = []  # enc[i]: (2B, w[i], H / 2^i, W / 2^i), [A; B]
        for i, block in enumerate(self.encoder[:4]):
            x = block(self.pool(x) if i else x)
            enc.append(x)
        deepest_b = self.encoder[4](self.pool(enc[3][n:]))  # only date B's is used
        nodes = {(i, 0): enc[i][n:] for i in range(4)} | {(4, 0): deepest_b}
        for j in range(1, 5):  # each nested column, coarse scales first so their nodes exist
            for i in range(4 - j, -1, -1):
                up = self.ups[f"{i + 1}_{j - 1}"](nodes[i + 1, j - 1])
                earlier = [nodes[i, k] for k in range(1, j)]
                nodes[i, j] = self.nodes[f"{i}_{j}"](torch.cat([enc[i][:n], enc[i][n:], *earlier, up], dim=1))
        outs = [nodes[0, j] for j in range(1, 5)]  # 4 x (B, base, H, W)
        stacked = torch.cat(outs, dim=1)  # (B, 4 * base, H, W)
        intra = self.attention_intra(sum(outs)).repeat(1, 4, 1, 1)
        return self.head(self.attention(stacked) * (stacked + intra))
