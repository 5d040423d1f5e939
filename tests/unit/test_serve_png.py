"""The service's PNG encoder decodes, with Pillow, to exactly the pixels it was given."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from feature_unlearn.serve.png import encode_pngs


@pytest.mark.parametrize(("shape", "mode"), [((3, 32, 32, 1), "L"), ((2, 17, 9, 3), "RGB"), ((1, 5, 64, 4), "RGBA")])
def test_round_trip(shape: tuple[int, ...], mode: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    files = encode_pngs(images)
    assert len(files) == shape[0]
    for f, want in zip(files, images, strict=True):
        im = Image.open(io.BytesIO(f))
        im.load()  # verifies the CRCs and the zlib stream
        assert im.mode == mode and im.size == (shape[2], shape[1])
        got = np.asarray(im)
        np.testing.assert_array_equal(got[..., None] if got.ndim == 2 else got, want)


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 4, 4, 1), np.float32), np.zeros((4, 4, 1), np.uint8), np.zeros((1, 4, 4, 2), np.uint8)]
)
def test_refuses_what_is_not_a_uint8_batch(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"expected uint8 \[N, H, W, 1\|3\|4\]"):
        encode_pngs(bad)
