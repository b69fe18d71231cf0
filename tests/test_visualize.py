"""The image panels: every column of A | B | truth | prediction is labelled in the image itself."""

import numpy as np
import pytest

from cdseg.inference.visualize import sample_panel, stack_rows, title_strip


@pytest.mark.parametrize("size", [32, 96, 256])
def test_the_title_strip_labels_each_column_and_fits_the_panel(size: int) -> None:
    a = np.zeros((size, size, 3), np.uint8)
    row = sample_panel(a, a, np.zeros((size, size)), np.ones((size, size)))
    strip = title_strip(size)
    assert strip.shape[1] == row.shape[1] and strip.shape[0] >= 10
    panel = stack_rows([strip, row])
    assert panel.shape == (strip.shape[0] + 2 + size, row.shape[1], 3)
    for col in range(4):  # some text drawn over every column, none in the gaps between them
        region = strip[:, col * (size + 2) : col * (size + 2) + size]
        assert (region > 128).any(), f"column {col} has no title"
    assert all((strip[:, c * (size + 2) - 2 : c * (size + 2)] <= 128).all() for c in range(1, 4))
