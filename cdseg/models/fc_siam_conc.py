"""FC-Siam-conc (Daudt et al., ICIP 2018): a shared encoder, skips that concatenate both dates."""

from __future__ import annotations

import torch

from cdseg.models.blocks import halves
from cdseg.models.fc import FCNet


class FCSiamConc(FCNet):
    """Siamese encoder; at every scale the decoder receives concat(FA, FB). 1.55 M parameters at
    ``base=16`` (as published). Arguments: :class:`cdseg.models.fc.FCNet`.

    As in the published code, the decoder starts from date B's deepest features, so the network is
    not symmetric in A and B.
    """

    skip_factor = 2

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feats, x = self.encoder(torch.cat([a, b], dim=0))  # (2B, C, H, W): both dates in one batch
        skips = [torch.cat(halves(f), dim=1) for f in feats]  # (B, 2C, h, w): [FA, FB]
        return self.decoder(halves(x)[1], skips)
