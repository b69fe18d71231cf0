"""FC-EF (Daudt et al., ICIP 2018): early fusion, the two dates stacked as one input of a U-Net."""

from __future__ import annotations

import torch

from cdseg.models.fc import FCNet


class FCEF(FCNet):
    """Early fusion: concat(A, B) along the bands -> U-Net. 1.35 M parameters at ``base=16`` (as
    published). Arguments: :class:`cdseg.models.fc.FCNet`."""

    dates_per_input = 2

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        skips, x = self.encoder(torch.cat([a, b], dim=1))
        return self.decoder(x, skips)
