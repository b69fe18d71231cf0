"""FC-Siam-diff (Daudt et al., ICIP 2018): a shared encoder, skips that carry |FA - FB|."""

from __future__ import annotations

import torch

from cdseg.models.blocks import halves
from cdseg.models.fc import FCNet


class FCSiamDiff(FCNet):
    """Siamese encoder; at every scale the decoder receives |FA - FB|. 1.35 M parameters at ``base=16``
    (as published). Arguments: :class:`cdseg.models.fc.FCNet`.

    The published code starts the decoder from date B's deepest features; here it starts from their
    absolute difference too, which keeps every parameter and makes the network exactly symmetric in A
    and B (a change reads the same both ways).
    """

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feats, x = self.encoder(torch.cat([a, b], dim=0))  # (2B, C, H, W): both dates in one batch
        skips = [torch.abs(fa - fb) for fa, fb in (halves(f) for f in feats)]
        xa, xb = halves(x)
        return self.decoder(torch.abs(xa - xb), skips)
