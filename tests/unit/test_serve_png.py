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


def test_png_level_is_chosen_by_how_well_the_images_compress() -> None:
    from feature_unlearn.serve.api import png_level

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # incompressible: store it
    flat = np.zeros((4, 32, 32, 1), np.uint8)
    flat[:, 10:20, 10:20] = 255  # a digit-like image on black compresses well
    assert png_level(noise) == 0 and png_level(flat) == 1
    stored = encode_pngs(noise, 0)
    assert all(len(s) > noise[0].size for s in stored)  # level 0 really stores
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(stored[1]))), noise[1])
