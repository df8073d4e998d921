"""WILDS image sets read from a local root, matched to the published layout (never downloaded).

The ``wilds`` package itself is not used: it requires torchvision and ogb (which would change the
pinned torch). The readers below reproduce its file layout and official splits:

- camelyon17 (v1.0): ``ROOT/camelyon17_v1.0/metadata.csv`` (columns patient, node, x_coord, y_coord,
  tumor, slide, center, split) and ``patches/patient_{patient}_node_{node}/patch_patient_{patient}_node_
  {node}_x_{x_coord}_y_{y_coord}.png`` (96 x 96). Splits: "val" = hospital (center) 1, "test" =
  hospital 2, "train" / "id_val" = split column 0 / 1 of the other hospitals (0, 3, 4). Domain: center.
- rxrx1 (v1.0): ``ROOT/rxrx1_v1.0/metadata.csv`` (experiment, plate, well, site, cell_type, sirna_id,
  dataset, ...) and ``images/{experiment}/Plate{plate}/{well}_s{site}.png`` (256 x 256). Splits: the
  ``dataset`` column ("train", "val", "test"). Domains: experiment, cell_type.
- fmow (v1.1): ``ROOT/fmow_v1.1/rgb_metadata.csv`` (split, category, country_code, timestamp, ...),
  ``country_code_mapping.csv`` (alpha-3, region) and ``images/rgb_img_{row}.png`` (224 x 224, row =
  0-based row of rgb_metadata.csv). Official scheme (time after 2016), named as ``wilds.get_dataset``
  names them by default: "test" = split test and year >= 2016, "ood_val" = split val and 2013 <=
  year < 2016, "id_test" / "val" = split test / val before 2013, "train" = split train before 2013;
  rows with split "seq" are never used. Domains: region (added column; "Other" for unmapped
  countries), year (added column).

Every reader returns a :class:`WildsTable` of the selected rows; ``split="all"`` keeps every row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["WILDS_DATASETS", "WILDS_SPLITS", "WildsTable", "read_wilds", "WILDS_HELP"]

#: dataset -> (directory glob, metadata file name)
WILDS_DATASETS: dict[str, tuple[str, str]] = {
    "camelyon17": ("camelyon17_v*", "metadata.csv"),
    "rxrx1": ("rxrx1_v*", "metadata.csv"),
    "fmow": ("fmow_v*", "rgb_metadata.csv"),
}
#: Official split names per dataset ("all" is always accepted).
WILDS_SPLITS: dict[str, tuple[str, ...]] = {
    "camelyon17": ("train", "id_val", "val", "test"),
    "rxrx1": ("train", "val", "test"),
    "fmow": ("train", "val", "id_test", "ood_val", "test"),
}
_REQUIRED = {
    "camelyon17": ("patient", "node", "x_coord", "y_coord", "tumor", "center", "split"),
    "rxrx1": ("experiment", "plate", "well", "site", "sirna_id", "dataset"),
    "fmow": ("split", "category", "country_code", "timestamp"),
}
_FILE_COLUMNS = ("filename", "img_filename", "image_path", "path", "file")

WILDS_HELP = ("WILDS data is not downloaded by gftlib. Install the `wilds` package elsewhere and run "
              "`wilds.get_dataset(dataset=NAME, download=True, root_dir=ROOT)` (or see "
              "https://wilds.stanford.edu/datasets/), so that ROOT/NAME_v<version>/metadata.csv (fmow: "
              "rgb_metadata.csv) and the image files it references exist.")


@dataclass(frozen=True)
class WildsTable:
    """Selected rows of a WILDS metadata file: ``files`` (paths relative to ``directory``), labels
    (n,) int64 or None (camelyon17 tumor, rxrx1 sirna_id, fmow category index in sorted order) and
    ``rows`` (pandas DataFrame of the selected rows as strings, with added columns)."""

    directory: Path
    metadata_path: Path
    files: tuple[str, ...]
    labels: np.ndarray | None
    rows: Any


def _help(dataset: str) -> str:
    return WILDS_HELP.replace("NAME", dataset)


def _directory(root: Path, dataset: str) -> tuple[Path, Path]:
    pattern, meta = WILDS_DATASETS.get(dataset, (f"{dataset}_v*", "metadata.csv"))
    if not root.is_dir():
        raise FileNotFoundError(f"WILDS root not found: {root}. {_help(dataset)}")
    found = sorted(p for p in root.glob(pattern) if p.is_dir())
    if not found:
        raise FileNotFoundError(f"WILDS dataset directory not found: {root / (dataset + '_v1.0')} "
                                f"(looked for "
                                f"{root / pattern}). {_help(dataset)}")
    directory = found[-1]
    meta_path = directory / meta
    if not meta_path.is_file():
        raise FileNotFoundError(f"WILDS metadata not found: {meta_path}. {_help(dataset)}")
    return directory, meta_path


def _read_csv(path: Path) -> Any:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(df) == 0:
        raise ValueError(f"{path} has no rows")
    return df


def _check_columns(df: Any, path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not in the WILDS layout: missing column(s) {missing}; expected "
                         f"{list(columns)}, found {list(df.columns)}")


def _camelyon(df: Any, split: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    c = df["center"].to_numpy()
    s = df["split"].to_numpy()
    ood = (c == "1") | (c == "2")
    masks = {"val": c == "1", "test": c == "2", "train": ~ood & (s == "0"), "id_val": ~ood & (s == "1")}
    mask = np.ones(len(df), bool) if split == "all" else masks[split]
    p, nd = df["patient"].to_numpy(), df["node"].to_numpy()
    x, y = df["x_coord"].to_numpy(), df["y_coord"].to_numpy()
    idx = np.flatnonzero(mask)
    files = [f"patches/patient_{p[i]}_node_{nd[i]}/patch_patient_{p[i]}_node_{nd[i]}_x_{x[i]}_y_{y[i]}.png"
             for i in idx]
    return idx, files, df["tumor"].to_numpy()[idx].astype(float).astype(np.int64)


def _rxrx1(df: Any, split: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    mask = np.ones(len(df), bool) if split == "all" else (df["dataset"].to_numpy() == split)
    idx = np.flatnonzero(mask)
    e, pl, w, s = (df[k].to_numpy() for k in ("experiment", "plate", "well", "site"))
    files = [f"images/{e[i]}/Plate{pl[i]}/{w[i]}_s{s[i]}.png" for i in idx]
    return idx, files, df["sirna_id"].to_numpy()[idx].astype(np.int64)


def _fmow(df: Any, directory: Path, split: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    import pandas as pd

    mapping_path = directory / "country_code_mapping.csv"
    if not mapping_path.is_file():
        raise FileNotFoundError(f"WILDS fmow country mapping not found: {mapping_path}. {_help('fmow')}")
    mapping = _read_csv(mapping_path)
    _check_columns(mapping, mapping_path, ("alpha-3", "region"))
    to_region = dict(zip(mapping["alpha-3"], mapping["region"]))
    df["region"] = [to_region.get(code, "Other") for code in df["country_code"]]
    year = pd.to_datetime(df["timestamp"], utc=True).dt.year.to_numpy()
    df["year"] = year.astype(str)
    s = df["split"].to_numpy()
    test_ood, val_ood = year >= 2016, (year >= 2013) & (year < 2016)
    iid = ~(test_ood | val_ood)
    masks = {"test": test_ood & (s == "test"), "ood_val": val_ood & (s == "val"),
             "id_test": iid & (s == "test"), "val": iid & (s == "val"), "train": iid & (s == "train")}
    mask = (s != "seq") if split == "all" else masks[split]
    idx = np.flatnonzero(mask)
    categories = {c: i for i, c in enumerate(sorted(set(df["category"])))}
    labels = np.asarray([categories[c] for c in df["category"].to_numpy()[idx]], dtype=np.int64)
    return idx, [f"images/rgb_img_{i}.png" for i in idx], labels


def _generic(df: Any, path: Path, split: str) -> tuple[np.ndarray, list[str], None]:
    col = next((c for c in _FILE_COLUMNS if c in df.columns), None)
    if col is None:
        raise ValueError(f"{path} has no image file column (one of {list(_FILE_COLUMNS)}); columns are "
                         f"{list(df.columns)}")
    if split == "all":
        mask = np.ones(len(df), bool)
    else:
        key = next((k for k in ("split", "dataset") if k in df.columns), None)
        if key is None:
            raise ValueError(f"{path} has no 'split' or 'dataset' column; use split='all' (and `where=` "
                             f"filters), got split={split!r}")
        mask = df[key].to_numpy() == split
    idx = np.flatnonzero(mask)
    return idx, list(df[col].to_numpy()[idx]), None


def _where_mask(df: Any, where: Mapping[str, Any], path: Path) -> np.ndarray:
    mask = np.ones(len(df), bool)
    for key, value in where.items():
        if key not in df.columns:
            raise ValueError(f"where: column {key!r} is not in {path} (columns: {list(df.columns)})")
        values = [value] if isinstance(value, (str, int, float)) else list(value)
        mask &= df[key].isin([str(v) for v in values]).to_numpy()
    return mask


def read_wilds(dataset: str, root: str | Path, *, split: str = "train",
               where: Mapping[str, Any] | None = None) -> WildsTable:
    """Select rows of the WILDS set ``dataset`` under ``root`` (see the module docstring).

    ``split``: "all" or an official split of WILDS_SPLITS[dataset] (other WILDS sets: a literal match
    on the metadata's "split" or "dataset" column). ``where``: column -> value or list of values
    (compared as strings), e.g. ``{"center": [0, 3, 4]}`` for three Camelyon17 hospitals,
    ``{"region": "Africa"}`` for FMoW, ``{"cell_type": "HUVEC"}`` for RxRx1. Raises
    FileNotFoundError / ValueError naming the path and the expected layout.
    """
    root = Path(root).expanduser()
    if not isinstance(split, str):
        raise TypeError(f"split must be a string, got {split!r}")
    if dataset in WILDS_SPLITS and split != "all" and split not in WILDS_SPLITS[dataset]:
        allowed = ", ".join(map(repr, ("all", *WILDS_SPLITS[dataset])))
        raise ValueError(f"split must be one of {allowed} for {dataset}; got {split!r}")
    directory, meta_path = _directory(root, dataset)
    df = _read_csv(meta_path)
    if dataset in _REQUIRED:
        _check_columns(df, meta_path, _REQUIRED[dataset])
    if dataset == "camelyon17":
        idx, files, labels = _camelyon(df, split)
    elif dataset == "rxrx1":
        idx, files, labels = _rxrx1(df, split)
    elif dataset == "fmow":
        idx, files, labels = _fmow(df, directory, split)
    else:
        idx, files, labels = _generic(df, meta_path, split)
    if where:
        keep = _where_mask(df, where, meta_path)[idx]
        idx, files = idx[keep], [f for f, k in zip(files, keep) if k]
        labels = None if labels is None else labels[keep]
    if len(idx) == 0:
        raise ValueError(f"no rows of {meta_path} match split={split!r} and where={dict(where or {})!r}")
    rows = df.iloc[idx].reset_index(drop=True)
    return WildsTable(directory=directory, metadata_path=meta_path, files=tuple(files), labels=labels,
                      rows=rows)
