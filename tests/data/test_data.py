"""Tests of gftlib.data.datasets: toy distributions, image patches, local data set loaders (fake files)."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest
import skimage.data
import skimage.io
import torch

from gftlib.data.datasets import (
    DISTRIBUTIONS_2D,
    IMAGE_SOURCES,
    image_patches,
    load_image_dataset,
    make_2d,
    patch_boxes,
    split_columns,
)

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ 2-D

def test_required_distributions_present():
    for name in ("gaussians8", "gaussians4", "moons", "rings", "checkerboard", "spiral", "gaussian"):
        assert name in DISTRIBUTIONS_2D


@pytest.mark.parametrize("name", DISTRIBUTIONS_2D)
def test_make_2d_standardised(name):
    n = 40_000
    x = make_2d(name, n, generator=gen(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32
    x = x.double()
    mean, var = x.mean(0), x.var(0)
    centred = x - mean
    m4 = (centred ** 4).mean(0)
    se_mean = torch.sqrt(var / n)
    se_var = torch.sqrt((m4 - var ** 2) / n)  # standard error of the sample variance
    assert (mean.abs() < 5 * se_mean).all(), (mean, se_mean)
    assert ((var - 1).abs() < 5 * se_var).all(), (var, se_var)


@pytest.mark.parametrize("name", DISTRIBUTIONS_2D)
def test_make_2d_deterministic(name):
    a = make_2d(name, 100, generator=gen(3))
    b = make_2d(name, 100, generator=gen(3))
    c = make_2d(name, 100, generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_make_2d_shapes_are_what_they_claim():
    x = make_2d("rings", 5000, generator=gen(1)).double()
    r = x.norm(dim=1)
    # two rings with radius ratio 2 (noise std 0.04 raw, small): radii cluster near r_out/2 and r_out
    inner, outer = r[r < r.median()], r[r >= r.median()]
    assert outer.mean() / inner.mean() == pytest.approx(2.0, rel=0.05)
    x8 = make_2d("gaussians8", 4000, generator=gen(2)).double()
    angle = torch.atan2(x8[:, 1], x8[:, 0])
    # signed angular distance to the nearest centre angle k * pi / 4
    offset = torch.remainder(angle + math.pi / 8, math.pi / 4) - math.pi / 8
    assert offset.abs().max() < math.pi / 8


def test_make_2d_rejects_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        make_2d("swissroll3d", 10, generator=gen(0))
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        make_2d("moons", 0, generator=gen(0))
    with pytest.raises(TypeError, match="generator must be a CPU torch.Generator"):
        make_2d("moons", 10, generator=3)


# -------------------------------------------------------------------------------- patches

@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_patch_shapes_and_range(size):
    p = image_patches("natural", size=size, n=12, split="train", seed=0)
    assert p.shape == (12, 3, size, size) and p.dtype == torch.float32
    assert p.min() >= -1.0 and p.max() <= 1.0
    assert p.std() > 0.05  # real image content, not a constant


def test_patches_deterministic_and_seed_dependent():
    a = image_patches("ihc", size=16, n=20, split="heldout", seed=5)
    b = image_patches("ihc", size=16, n=20, split="heldout", seed=5)
    c = image_patches("ihc", size=16, n=20, split="heldout", seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("source", list(IMAGE_SOURCES))
def test_train_and_heldout_regions_are_disjoint(source):
    train_cols, held_cols = split_columns(source, "train"), split_columns(source, "heldout")
    for (s0, e0), (s1, e1), name in zip(train_cols, held_cols, IMAGE_SOURCES[source]):
        assert e0 <= s1 and s0 == 0 and e1 == getattr(skimage.data, name)().shape[1]
    for split, cols in (("train", train_cols), ("heldout", held_cols)):
        b = patch_boxes(source, size=16, n=300, split=split, seed=1, downsample=2)
        start = torch.tensor([cols[i][0] for i in b.image_index])
        end = torch.tensor([cols[i][1] for i in b.image_index])
        assert (b.left >= start).all() and (b.left + b.crop <= end).all()
        assert (b.top >= 0).all()


def test_patch_pixels_are_the_boxes_crops():
    kw = dict(size=8, n=40, split="heldout", seed=2, downsample=2)
    p = image_patches("natural", **kw)
    b = patch_boxes("natural", **kw)
    assert b.flipped.any() and (~b.flipped).any()
    for i in range(40):
        img = getattr(skimage.data, IMAGE_SOURCES["natural"][int(b.image_index[i])])()
        t, l, c = int(b.top[i]), int(b.left[i]), b.crop
        crop = img[t:t + c, l:l + c].astype(np.float64)
        if b.flipped[i]:
            crop = crop[:, ::-1]
        pooled = crop.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
        np.testing.assert_allclose(p[i].numpy(), pooled / 127.5 - 1.0, atol=1e-5)


def test_no_flip_option():
    b = patch_boxes("natural", size=8, n=50, seed=3, flip=False)
    assert not b.flipped.any()


def test_patches_reject_bad_input():
    with pytest.raises(ValueError, match="source must be one of"):
        image_patches("imagenet", size=8, n=2)
    with pytest.raises(ValueError, match="split must be one of"):
        image_patches("natural", size=8, n=2, split="test")
    with pytest.raises(ValueError, match=r"size \* downsample must be <= 113"):
        image_patches("natural", size=64, n=2, downsample=2)
    with pytest.raises(ValueError, match="size must be an integer >= 2"):
        image_patches("natural", size=0, n=2)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        image_patches("natural", size=8, n=0)
    with pytest.raises(ValueError, match="downsample must be an integer >= 1"):
        image_patches("natural", size=8, n=2, downsample=0)


# ------------------------------------------------------------------------- local data sets

def _fake_cifar(root, n=10, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"testing batch"}, fh)
    return data, labels


def test_cifar10_fake_batch_loads(tmp_path):
    data, labels = _fake_cifar(tmp_path)
    ds = load_image_dataset("cifar10", tmp_path, split="test", size=32)
    assert ds.images.shape == (10, 3, 32, 32) and ds.images.dtype == torch.float32
    # CIFAR rows are 1024 red, then green, then blue values, each row-major 32 x 32
    expected = torch.from_numpy(data.reshape(10, 3, 32, 32)).float() / 127.5 - 1.0
    torch.testing.assert_close(ds.images, expected)
    assert ds.labels.tolist() == labels and ds.metadata is None
    small = load_image_dataset("cifar10", tmp_path, split="test", size=16, n=4, seed=1)
    assert small.images.shape == (4, 3, 16, 16)
    assert small.images.min() >= -1 and small.images.max() <= 1
    # a subset: distinct images of the full set, each with its own label
    sub = load_image_dataset("cifar10", tmp_path, split="test", size=32, n=4, seed=1)
    idx = [int(torch.nonzero((expected == im).flatten(1).all(1))[0]) for im in sub.images]
    assert len(set(idx)) == 4 and sub.labels.tolist() == [labels[i] for i in idx]
    assert small.labels.tolist() == sub.labels.tolist()  # same seed -> same subset at any size


def test_cifar10_missing_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_image_dataset("cifar10", missing, split="train")
    _fake_cifar(tmp_path)
    batch1 = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with pytest.raises(FileNotFoundError, match=re.escape(str(batch1))):
        load_image_dataset("cifar10", tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_image_dataset("cifar10", tmp_path, split="train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_image_dataset("cifar10", tmp_path, split="heldout")
    with pytest.raises(ValueError, match="n must be <= 10"):
        load_image_dataset("cifar10", tmp_path, split="test", n=11)


CAMELYON_ROWS = [  # patient, node, x, y, tumor, slide, center, split
    ("004", "4", "3328", "21792", "1", "0", "0", "0"),
    ("010", "4", "1024", "2048", "0", "5", "3", "1"),
    ("020", "2", "512", "640", "1", "10", "1", "0"),
    ("051", "2", "96", "192", "0", "30", "2", "0"),
]


def _fake_camelyon(root):
    d = root / "camelyon17_v1.0"
    lines = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    colours = []
    for i, (p, nd, x, y, tumor, slide, center, split) in enumerate(CAMELYON_ROWS):
        lines.append(f"{i},{p},{nd},{x},{y},{tumor},{slide},{center},{split}")
        folder = d / "patches" / f"patient_{p}_node_{nd}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([40 * i + 10, 200 - 30 * i, 100], dtype=np.uint8)
        colours.append(colour)
        img = np.broadcast_to(colour, (96, 96, 3)).copy()
        skimage.io.imsave(folder / f"patch_patient_{p}_node_{nd}_x_{x}_y_{y}.png", img, check_contrast=False)
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    return d, colours


def test_wilds_camelyon_fake_folder_loads(tmp_path):
    d, colours = _fake_camelyon(tmp_path)
    ds = load_image_dataset("wilds-camelyon17", tmp_path, split="all", size=32)
    assert ds.images.shape == (4, 3, 32, 32) and ds.directory == d
    for i, colour in enumerate(colours):  # constant patches stay constant after resizing
        value = torch.from_numpy(colour.astype(np.float32) / 255.0 * 2 - 1)
        expected = value[:, None, None].expand(3, 32, 32)
        torch.testing.assert_close(ds.images[i], expected, atol=1e-5, rtol=0)
    assert ds.labels.tolist() == [1, 0, 1, 0]
    assert [m["patient"] for m in ds.metadata] == ["004", "010", "020", "051"]
    # official WILDS splits: hospital 1 = val, hospital 2 = test, others by the split column
    for split, patients in {"train": ["004"], "id_val": ["010"], "val": ["020"], "test": ["051"]}.items():
        part = load_image_dataset("wilds-camelyon17", tmp_path, split=split, size=8)
        assert [m["patient"] for m in part.metadata] == patients
    sel = load_image_dataset("wilds-camelyon17", tmp_path, split="all", size=8, where={"center": 3})
    assert [m["center"] for m in sel.metadata] == ["3"]
    sub = load_image_dataset("wilds-camelyon17", tmp_path, split="all", size=8, n=2, seed=0)
    assert sub.images.shape == (2, 3, 8, 8)


def test_wilds_missing_paths(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_image_dataset("wilds-camelyon17", missing, split="all")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "camelyon17_v1.0"))):
        load_image_dataset("wilds-camelyon17", tmp_path, split="all")
    d, _ = _fake_camelyon(tmp_path)
    gone = d / "patches" / "patient_020_node_2" / "patch_patient_020_node_2_x_512_y_640.png"
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(gone))):
        load_image_dataset("wilds-camelyon17", tmp_path, split="all")
    (d / "metadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(d / "metadata.csv"))):
        load_image_dataset("wilds-camelyon17", tmp_path, split="all")


def test_load_image_dataset_rejects_bad_arguments(tmp_path):
    _fake_camelyon(tmp_path)
    with pytest.raises(ValueError, match="name must be 'cifar10' or 'wilds-<dataset>'"):
        load_image_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match="size must be an integer >= 2"):
        load_image_dataset("wilds-camelyon17", tmp_path, split="all", size=1)
    with pytest.raises(ValueError, match="split must be one of 'all', 'train'"):
        load_image_dataset("wilds-camelyon17", tmp_path, split="ood")
    with pytest.raises(ValueError, match="column 'hospital' is not in"):
        load_image_dataset("wilds-camelyon17", tmp_path, split="all", where={"hospital": 1})
    with pytest.raises(ValueError, match="no rows of"):
        load_image_dataset("wilds-camelyon17", tmp_path, split="all", where={"center": 9})
