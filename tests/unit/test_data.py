from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from feature_unlearn.unlearn.data import load_dataset, load_folder, train_test
from feature_unlearn.unlearn.data.base import EXCLUSION_BAND, ImageSet
from feature_unlearn.unlearn.data.faces import P_GLASSES_GIVEN_GREY, P_GLASSES_GIVEN_NOT_GREY, render_faces
from feature_unlearn.unlearn.data.mnist import THICK_SOFTNESS, shift_averaged_width
from feature_unlearn.unlearn.data.thinning import skeletonize, stroke_width
from feature_unlearn.unlearn.errors import ConfigError, DataError


@pytest.mark.slow  # the first load of mnist (5,000 digits, stroke widths over four shifts) takes about 8 s
def test_mnist_shape_range_and_attributes() -> None:
    data = load_dataset("mnist")
    assert data.images.shape == (5000, 1, 32, 32)
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    assert torch.bincount(data.attrs["digit"]).tolist() == [500] * 10
    assert torch.equal(data.attrs["eight"], (data.attrs["digit"] == 8).long())
    assert abs(data.rates()["thick"] - 0.10) < 0.005  # top 10% of stroke widths


@pytest.mark.slow
def test_thick_digits_have_wider_strokes() -> None:
    data = load_dataset("mnist")
    gray = ((data.images[:, 0, 2:30, 2:30] + 1) / 2).numpy()
    width = shift_averaged_width(gray)
    thick = data.attrs["thick"].numpy() == 1
    assert width[thick].min() >= width[~thick].max()


def test_skeleton_of_a_bar_is_one_pixel_wide() -> None:
    bar = np.zeros((1, 12, 20), bool)
    bar[0, 4:9, 2:18] = True  # 5 px thick, 16 px long
    skel = skeletonize(bar)
    assert skel.sum() <= 16 and (skel.sum(axis=1) <= 1).all()
    # Thinning shortens the ends by about the half-width, so the measure overestimates a little.
    assert 5.0 <= stroke_width(bar.astype(np.float32))[0] < 8.0


def test_the_exclusion_band_is_0_2_px_of_stroke_width() -> None:
    """base.EXCLUSION_BAND is in score units (base cannot import mnist): a new softness must move it too."""
    assert EXCLUSION_BAND * THICK_SOFTNESS == pytest.approx(0.2)


def _zhang_suen_per_pixel(ink: np.ndarray) -> np.ndarray:
    """The published algorithm pixel by pixel (the reference for the table-driven one)."""
    img = np.pad(ink.astype(int), 1)
    while True:
        removed = False
        for step in (0, 1):
            gone = []
            for y, x in zip(*np.nonzero(img[1:-1, 1:-1]), strict=True):
                y, x = y + 1, x + 1
                p = [img[y - 1, x], img[y - 1, x + 1], img[y, x + 1], img[y + 1, x + 1],
                     img[y + 1, x], img[y + 1, x - 1], img[y, x - 1], img[y - 1, x - 1]]  # fmt: skip
                a = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
                if step == 0:
                    cond = p[0] * p[2] * p[4] == 0 and p[2] * p[4] * p[6] == 0
                else:
                    cond = p[0] * p[2] * p[6] == 0 and p[0] * p[4] * p[6] == 0
                if 2 <= sum(p) <= 6 and a == 1 and cond:
                    gone.append((y, x))
            for y, x in gone:
                img[y, x] = 0
            removed |= bool(gone)
        if not removed:
            return img[1:-1, 1:-1].astype(bool)


def test_table_driven_thinning_matches_the_published_algorithm() -> None:
    rng = np.random.default_rng(0)
    blobs = rng.random((24, 14, 14)) < 0.55
    blobs[:8, 3:11, 3:11] = True  # solid squares thin over several passes
    want = np.stack([_zhang_suen_per_pixel(b) for b in blobs])
    assert np.array_equal(skeletonize(blobs), want)
    assert want[:8, 4:10, 4:10].sum() < 8 * 36 // 2  # the reference really thins the squares


def test_faces_are_deterministic_and_seed_dependent() -> None:
    a, attrs_a = render_faces(64, seed=3)
    b, attrs_b = render_faces(64, seed=3)
    c, _ = render_faces(64, seed=4)
    assert np.array_equal(a, b) and all(np.array_equal(attrs_a[k], attrs_b[k]) for k in attrs_a)
    assert not np.array_equal(a, c)
    assert a.shape == (64, 3, 32, 32) and 0.0 <= a.min() and a.max() <= 1.0


@pytest.mark.slow
def test_faces_attribute_rates_and_glasses_grey_correlation() -> None:
    _, attrs = render_faces(6000, seed=0)
    for k, v in attrs.items():
        assert 0.10 <= v.mean() <= 0.20, (k, v.mean())
    grey = attrs["grey_hair"]
    assert abs(attrs["eyeglasses"][grey].mean() - P_GLASSES_GIVEN_GREY) < 0.05
    assert abs(attrs["eyeglasses"][~grey].mean() - P_GLASSES_GIVEN_NOT_GREY) < 0.02


@pytest.mark.slow
def test_glasses_change_the_pixels_around_the_eyes() -> None:
    img, attrs = render_faces(2000, seed=1)
    eyes = img[:, :, 12:18, 8:24].mean(axis=(1, 2, 3))
    glasses = attrs["eyeglasses"]
    assert eyes[glasses].mean() < eyes[~glasses].mean() - 0.03  # dark frames


def _digests(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images]


@pytest.mark.slow  # the first load of mnist (5,000 digits, stroke widths over four shifts) takes about 8 s
@pytest.mark.parametrize("resolution", [32, 64])
def test_faces_drawn_without_a_feature_are_the_same_faces_without_it(resolution: int) -> None:
    img, attrs = render_faces(300, seed=5, chunk=128, resolution=resolution)
    cf, cf_attrs = render_faces(300, seed=5, chunk=128, resolution=resolution, absent=("eyeglasses",))
    glasses = attrs["eyeglasses"]
    assert 10 < glasses.sum() < 100 and not cf_attrs["eyeglasses"].any()
    np.testing.assert_array_equal(cf[~glasses], img[~glasses])  # every other draw is unchanged
    assert all((cf[i] != img[i]).any() for i in np.flatnonzero(glasses))
    assert all(np.array_equal(cf_attrs[k], attrs[k]) for k in attrs if k != "eyeglasses")  # grey hair kept
    with pytest.raises(ConfigError, match="no attribute 'monocle'"):
        render_faces(4, absent=("monocle",))


def test_split_is_fixed_and_disjoint() -> None:
    full = load_dataset("mnist")
    where = {d: i for i, d in enumerate(_digests(full.images))}
    assert len(where) == len(full)  # no two digits are the same image: an image's digest names its row
    tr1, te1 = train_test("mnist")
    tr2, te2 = train_test("mnist")
    assert len(te1) == 500 and len(tr1) == 4500
    assert torch.equal(te1.images, te2.images) and torch.equal(tr1.images, tr2.images)  # the same on every call
    train, test = [where[d] for d in _digests(tr1.images)], [where[d] for d in _digests(te1.images)]
    assert not set(train) & set(test)  # disjoint
    assert sorted(train + test) == list(range(len(full)))  # and together every image exactly once
    assert torch.equal(te1.attrs["digit"], full.attrs["digit"][test])  # labels travel with their images
    # fixed across versions too: the zoo's held-out metrics were measured on exactly these digits
    assert test[:8] == [1044, 2591, 4111, 725, 1703, 1919, 2111, 138]


def test_split_partitions_the_rows_by_seed() -> None:
    rows = torch.arange(40, dtype=torch.float32)
    data = ImageSet("toy", rows.view(40, 1, 1, 1), {"row": rows.long()}, {"row": 40})
    train, test = data.split(0.25, seed=3)
    assert len(test) == 10 and len(train) == 30
    assert sorted(train.attrs["row"].tolist() + test.attrs["row"].tolist()) == list(range(40))
    assert torch.equal(train.images.flatten().long(), train.attrs["row"])  # attributes stay with their images
    again, other = data.split(0.25, seed=3)[1], data.split(0.25, seed=4)[1]
    assert torch.equal(again.attrs["row"], test.attrs["row"])
    assert set(other.attrs["row"].tolist()) != set(test.attrs["row"].tolist())


@pytest.mark.slow  # the first load of mnist (5,000 digits, stroke widths over four shifts) takes about 8 s
def test_without_removes_the_feature() -> None:
    full = load_dataset("mnist")
    data = full.without("thick")
    assert data.attrs["thick"].sum() == 0
    # and the band under the threshold: 0.2 px of stroke width (2.5% of the digits) goes with it
    assert data.scores["thick"].max() < -EXCLUSION_BAND
    assert 4300 < len(data) < 4450 and len(data) == int((full.scores["thick"] < -EXCLUSION_BAND).sum())


def test_without_a_binary_feature_keeps_every_image_that_lacks_it() -> None:
    attrs = {"a": torch.tensor([0, 1, 0, 0]), "b": torch.tensor([0, 1, 1, 0])}
    data = ImageSet("t", torch.zeros(4, 1, 2, 2), attrs, {"a": 2, "b": 2}, {"b": torch.tensor([-3.0, 1.0, 0.5, -1.0])})
    assert len(data.without("a")) == 3  # no score: exactly the images without it
    assert len(data.without("b")) == 1  # the score -1.0 lies inside the band under the threshold


def test_unknown_dataset_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="--dataset"):
        load_dataset("cifar")


def _save(path, arr) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    Image.fromarray(arr).save(path)


def test_folder_dataset_with_attributes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        _save(tmp_path / f"im{i}.png", np.full((32, 32, 3), 40 * i, np.uint8))
    (tmp_path / "attrs.csv").write_text("filename,glasses\nim0.png,1\nim1.png,0\nim2.png,1\n")
    data = load_folder(tmp_path, tmp_path / "attrs.csv")
    assert data.images.shape == (3, 3, 32, 32)
    assert data.attrs["glasses"].tolist() == [1, 0, 1] and data.classes["glasses"] == 2
    assert data.images[0].min() == -1.0


def test_folder_rejects_mixed_sizes_naming_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _save(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    _save(tmp_path / "b.png", np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(DataError, match="b.png"):
        load_folder(tmp_path)


def test_folder_rejects_bad_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "attrs.csv").write_text("filename,glasses\na.png,yes\n")
    with pytest.raises(DataError, match="glasses"):
        load_folder(tmp_path, tmp_path / "attrs.csv")
    (tmp_path / "attrs.csv").write_text("filename,glasses\nother.png,1\n")
    with pytest.raises(DataError, match="a.png"):
        load_folder(tmp_path, tmp_path / "attrs.csv")
