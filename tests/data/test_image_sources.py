"""Image data from disk: folders, arrays, CIFAR-10 batches and the WILDS layouts (fake files)."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from gftlib.data.image_sources import image_loader, open_image_source, open_image_spec, to_model_range


def _png(path, colour, size=(24, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.broadcast_to(np.asarray(colour, np.uint8), (*size, 3)).copy()).save(path)


def _value(colour):
    return torch.tensor(colour, dtype=torch.float32) / 127.5 - 1.0


def _assert_constant(image, colour):
    """A constant-colour file stays constant through crop and resize."""
    expected = _value(colour)[:, None, None].expand(*image.shape)
    torch.testing.assert_close(image, expected, atol=1e-5, rtol=0)


def test_to_model_range_crop_resize_and_range():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :10] = 255  # left and right borders fall outside the centred 40 x 40 square
    img[:, 50:] = 255
    img[:, 10:50] = (0, 128, 255)
    out = to_model_range(img, 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, _value((0, 128, 255))[:, None, None].expand(3, 32, 32), atol=1e-5, rtol=0)
    grey = to_model_range(np.full((8, 8, 1), 255, np.uint8), 8)
    assert torch.equal(grey, torch.ones(3, 8, 8))
    assert to_model_range(np.full((8, 8, 3), 0, np.uint8), 96).shape == (3, 96, 96)


def test_folder_recursive_split_by_seeded_hash(tmp_path):
    root = tmp_path / "imgs"
    colours = {}
    for i in range(40):
        rel = f"class_{i % 3}/sub/img_{i}.png" if i % 2 else f"top_{i}.PNG"
        colours[rel] = (i * 6, 255 - i * 6, 7)
        _png(root / rel, colours[rel], size=(20, 30))
    _png(root / "photo.jpg", (128, 128, 128))
    (root / "notes.txt").write_text("not an image")
    all_ = open_image_source("folder", root, split="all", image_size=16)
    assert len(all_) == 41 and all_.labels is None
    train = open_image_source("folder", root, split="train", image_size=16, heldout_fraction=0.25)
    held = open_image_source("folder", root, split="heldout", image_size=16, heldout_fraction=0.25)
    assert set(train.keys).isdisjoint(held.keys) and set(train.keys) | set(held.keys) == set(all_.keys)
    assert 0 < len(held) < len(train)
    again = open_image_source("folder", root, split="heldout", image_size=16, heldout_fraction=0.25)
    other = open_image_source("folder", root, split="heldout", image_size=16, heldout_fraction=0.25, seed=1)
    assert again.keys == held.keys and other.keys != held.keys
    # the split of a file depends only on its own path: adding files moves no existing file
    _png(root / "new" / "extra.png", (1, 2, 3))
    grown = open_image_source("folder", root, split="heldout", image_size=16, heldout_fraction=0.25)
    assert set(held.keys) <= set(grown.keys) <= set(held.keys) | {"new/extra.png"}
    k = train.keys.index("class_1/sub/img_1.png")
    _assert_constant(train[k], colours["class_1/sub/img_1.png"])
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        open_image_source("folder", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image files under .*empty.*\.png"):
        open_image_source("folder", tmp_path / "empty")
    with pytest.raises(ValueError, match=r"split must be one of 'train', 'heldout', 'all'; got 'test'"):
        open_image_source("folder", root, split="test")


def test_npz_and_npy_arrays(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(6, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=u8, labels=np.arange(6))
    ds = open_image_source("npz", tmp_path / "a.npz", split="all", image_size=12)
    expected = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(torch.stack([ds[i] for i in range(6)]), expected)
    fl = rng.uniform(-1, 1, size=(5, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "b.npy", fl)
    ds2 = open_image_spec(f"npz:{tmp_path / 'b.npy'}", split="all", image_size=8)
    torch.testing.assert_close(ds2[4], torch.from_numpy(fl[4]))
    np.savez(tmp_path / "two.npz", p=u8, q=u8)
    with pytest.raises(ValueError, match=r"key=\.\.\., one of \['p', 'q'\]"):
        open_image_source("npz", tmp_path / "two.npz")
    assert len(open_image_source("npz", tmp_path / "two.npz", key="q", split="all")) == 6
    np.save(tmp_path / "bad.npy", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"bad\.npy: expected images \(N, H, W, C\) uint8 or \(N, C, H, W\)"):
        open_image_source("npz", tmp_path / "bad.npy")
    np.save(tmp_path / "range.npy", np.full((2, 3, 4, 4), 255.0, np.float32))
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]"):
        open_image_source("npz", tmp_path / "range.npy")


def test_cifar10_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=(7, 3072), dtype=np.uint8)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": list(range(7))}, fh)
    ds = open_image_spec(f"cifar10:{tmp_path}", split="test", image_size=32)
    torch.testing.assert_close(ds[3], torch.from_numpy(data[3].reshape(3, 32, 32)).float() / 127.5 - 1)
    assert ds.labels.tolist() == list(range(7))
    assert open_image_source("cifar10", tmp_path, split="test", image_size=64)[0].shape == (3, 64, 64)
    with pytest.raises(FileNotFoundError, match=re.escape(str(d / "data_batch_1"))):
        open_image_source("cifar10", tmp_path, split="train")


CAMELYON = [  # patient, node, x, y, tumor, center, split
    ("004", "4", "3328", "21792", "1", "0", "0"), ("004", "4", "10", "20", "0", "0", "1"),
    ("010", "4", "1024", "2048", "0", "3", "0"), ("015", "1", "7", "9", "1", "4", "0"),
    ("020", "2", "512", "640", "1", "1", "0"), ("051", "2", "96", "192", "0", "2", "0"),
]


def _camelyon(root):
    d = root / "camelyon17_v1.0"
    lines = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    for i, (p, nd, x, y, tumor, center, split) in enumerate(CAMELYON):
        lines.append(f"{i},{p},{nd},{x},{y},{tumor},{i},{center},{split}")
        _png(d / "patches" / f"patient_{p}_node_{nd}" / f"patch_patient_{p}_node_{nd}_x_{x}_y_{y}.png",
             (40 * i, 100, 200 - 30 * i), size=(96, 96))
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    return d


def test_wilds_camelyon17_splits_hospitals_and_streaming(tmp_path):
    d = _camelyon(tmp_path)
    expect = {"train": ["0", "3", "4"], "id_val": ["0"], "val": ["1"], "test": ["2"]}
    for split, centers in expect.items():
        ds = open_image_source("wilds-camelyon17", tmp_path, split=split, image_size=32)
        assert list(ds.metadata["center"]) == centers and ds.directory == d
    ds = open_image_source("wilds-camelyon17", tmp_path, split="train", image_size=96,
                           where={"center": [0, 4]})
    assert list(ds.metadata["patient"]) == ["004", "015"] and ds.labels.tolist() == [1, 1]
    _assert_constant(ds[1], (120, 100, 110))
    all_ = open_image_spec(f"wilds-camelyon17:{tmp_path}", split="all", image_size=32)
    loader = image_loader(all_, batch_size=4, num_workers=2, shuffle=True, seed=0)
    batches = [b for b in loader]
    assert [tuple(b.shape) for b in batches] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    means = sorted(round(float(v), 4) for v in torch.cat(batches)[:, 0].mean(dim=(1, 2)))
    assert means == sorted(round(float(all_[i][0].mean()), 4) for i in range(len(all_)))
    order = [b for b in image_loader(all_, batch_size=4, num_workers=0, seed=0)]
    assert all(torch.equal(a, b) for a, b in zip(batches, order))  # same seed -> same order
    with pytest.raises(ValueError, match=r"split must be one of 'all', 'train', 'id_val', 'val', 'test'"):
        open_image_source("wilds-camelyon17", tmp_path, split="ood")


def test_wilds_wrong_layout_fails_at_once(tmp_path):
    d = _camelyon(tmp_path)
    gone = d / "patches" / "patient_004_node_4" / "patch_patient_004_node_4_x_3328_y_21792.png"
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(gone)) + ".*camelyon17 layout"):
        open_image_source("wilds-camelyon17", tmp_path, split="all")
    (d / "metadata.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=re.escape(str(d / "metadata.csv")) + r".*missing column.*'patient'"):
        open_image_source("wilds-camelyon17", tmp_path, split="all")
    with pytest.raises(FileNotFoundError, match=r"rxrx1_v\*"):
        open_image_source("wilds-rxrx1", tmp_path)


def test_wilds_rxrx1(tmp_path):
    d = tmp_path / "rxrx1_v1.0"
    rows = [("HEPG2-01", "1", "B02", "1", "HEPG2", "5", "train"),
            ("HUVEC-02", "3", "C10", "2", "HUVEC", "7", "val"),
            ("U2OS-01", "2", "D04", "1", "U2OS", "1", "test"),
            ("HUVEC-01", "1", "B03", "1", "HUVEC", "2", "train")]
    lines = ["site_id,well_id,cell_type,dataset,experiment,plate,well,site,well_type,sirna,sirna_id"]
    for i, (e, pl, w, s, cell, y, split) in enumerate(rows):
        lines.append(f"{e}_{pl}_{w}_{s},{e}_{pl}_{w},{cell},{split},{e},{pl},{w},{s},treatment,s{y},{y}")
        _png(d / "images" / e / f"Plate{pl}" / f"{w}_s{s}.png", (10 * i, 20, 30), size=(64, 64))
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    train = open_image_source("wilds-rxrx1", tmp_path, split="train", image_size=32)
    assert list(train.metadata["experiment"]) == ["HEPG2-01", "HUVEC-01"] and train.labels.tolist() == [5, 2]
    huvec = open_image_source("wilds-rxrx1", tmp_path, split="all", image_size=32,
                              where={"cell_type": "HUVEC"})
    assert huvec.keys == ["images/HUVEC-02/Plate3/C10_s2.png", "images/HUVEC-01/Plate1/B03_s1.png"]
    assert huvec[0].shape == (3, 32, 32)


def test_wilds_fmow_time_splits_regions(tmp_path):
    d = tmp_path / "fmow_v1.1"
    rows = [("train", "2010-05-01T10:00:00Z", "USA", "airport"),
            ("val", "2011-01-01T00:00:00Z", "FRA", "barn"),
            ("seq", "2012-01-01T00:00:00Z", "USA", "barn"), ("val", "2014-03-03T00:00:00Z", "KEN", "airport"),
            ("test", "2016-07-01T00:00:00Z", "XXX", "barn"), ("test", "2012-12-31T23:00:00Z", "KEN", "dam"),
            ("train", "2015-01-01T00:00:00Z", "USA", "dam")]  # a "train" row inside the OOD-val years
    lines = ["split,img_filename,img_path,spatial_reso,y,x,epsg,category,visible,img_width,img_height,"
             "country_code,cloud_cover,timestamp,lat,lon"]
    for i, (split, ts, cc, cat) in enumerate(rows):
        lines.append(f"{split},f{i}.jpg,p{i},1.0,0,0,0,{cat},True,224,224,{cc},0,{ts},0,0")
        _png(d / "images" / f"rgb_img_{i}.png", (30 * i, 60, 90), size=(224, 224))
    (d / "rgb_metadata.csv").write_text("\n".join(lines) + "\n")
    (d / "country_code_mapping.csv").write_text("alpha-3,region\nUSA,Americas\nFRA,Europe\nKEN,Africa\n")
    keys = {s: open_image_source("wilds-fmow", tmp_path, split=s, image_size=32).keys
            for s in ("train", "val", "id_test", "ood_val", "test")}
    assert keys == {"train": ["images/rgb_img_0.png"], "val": ["images/rgb_img_1.png"],
                    "id_test": ["images/rgb_img_5.png"], "ood_val": ["images/rgb_img_3.png"],
                    "test": ["images/rgb_img_4.png"]}
    all_ = open_image_source("wilds-fmow", tmp_path, split="all", image_size=32)
    assert "images/rgb_img_2.png" not in all_.keys and len(all_) == 6  # sequestered rows never used
    assert list(all_.metadata["region"]) == ["Americas", "Europe", "Africa", "Other", "Africa", "Americas"]
    africa = open_image_source("wilds-fmow", tmp_path, split="all", image_size=32, where={"region": "Africa"})
    assert africa.keys == ["images/rgb_img_3.png", "images/rgb_img_5.png"]
    assert africa.labels.tolist() == [0, 2]  # sorted categories: airport, barn, dam
    _assert_constant(africa[0], (90, 60, 90))
    (d / "country_code_mapping.csv").unlink()
    with pytest.raises(FileNotFoundError, match="country_code_mapping.csv"):
        open_image_source("wilds-fmow", tmp_path, split="all")


def test_hflip_augmentation(tmp_path):
    u8 = np.zeros((1, 4, 4, 3), np.uint8)
    u8[0, :, 0] = 255  # a bright left column
    np.save(tmp_path / "a.npy", u8)
    plain = open_image_source("npz", tmp_path / "a.npy", split="all", image_size=4)
    flip = open_image_source("npz", tmp_path / "a.npy", split="all", image_size=4, hflip=True)
    torch.manual_seed(0)
    left = [bool(flip[0][0, 0, 0] == 1) for _ in range(400)]
    assert bool(plain[0][0, 0, 0] == 1) and all(bool(plain[0][0, 0, 0] == 1) for _ in range(5))
    # Binomial(400, 1/2): 5 standard deviations (50) either side of 200
    assert 150 <= sum(left) <= 250
    with pytest.raises(TypeError, match="hflip"):
        open_image_source("npz", tmp_path / "a.npy", hflip="yes")


def test_open_image_source_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"kind must be one of \['folder', 'npz', 'cifar10'"):
        open_image_source("imagenet", tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        open_image_source("folder", tmp_path, image_size=1)
    with pytest.raises(ValueError, match="where is only supported for WILDS"):
        open_image_source("folder", tmp_path, where={"a": 1})
    with pytest.raises(ValueError, match="KIND:PATH"):
        open_image_spec("folder")
    with pytest.raises(ValueError, match="heldout_fraction"):
        open_image_source("folder", tmp_path, heldout_fraction=1.5)
