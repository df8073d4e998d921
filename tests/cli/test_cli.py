"""The `gft` command end to end on the 2-D built-in data (fast), resume, torchrun, no warnings."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from gftlib.cli import main
from gftlib.experiments.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--hidden", "16", "--depth", "1", "--batch-size", "16", "--n-data", "64", "--no-progress"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("PYTHONWARNINGS", None)
    return env


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "pre.pt"
    assert main(["pretrain", "--data", "2d:gaussians8", "--model", "mlp", "--steps", "20", "--out", str(out),
                 *TINY]) == 0
    return out


def test_console_script_and_module_entry():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gft"] == "gftlib.cli:console_main"
    import gftlib.cli

    assert callable(gftlib.cli.console_main)
    run = subprocess.run([sys.executable, "-m", "gftlib", "--help"], env=_env(), capture_output=True,
                         text=True,
                         timeout=120)
    assert run.returncode == 0 and "pretrain" in run.stdout and "finetune" in run.stdout


@pytest.mark.parametrize("command", ["pretrain", "finetune", "sample", "eval"])
def test_every_help_ends_with_a_worked_example(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out.rstrip()
    tail = text[text.rindex("example"):]
    assert f"gft {command} " in tail and tail == text[-len(tail):]


@pytest.mark.parametrize("method", [m if m == "gft-coupling" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in METHODS])
def test_finetune_every_method_then_sample_and_eval(method, pretrained, tmp_path, capsys):
    out = tmp_path / f"{method}.pt"
    args = ["finetune", "--pretrained", str(pretrained), "--data", "2d:moons", "--method", method, "--steps",
            "3",
            "--out", str(out), "--cache-size", "32", "--n-trajectories", "8", "--time-grid", "2",
            "--solver-steps", "4", *TINY]
    assert main(args) == 0
    w = torch.load(out, weights_only=True)
    assert w["format"] == "gftlib-weights-v1" and w["model_spec"]["kind"] == "mlp"
    assert w["args"]["method"] == method and [h["step"] for h in w["history"]][-1] == 3
    pre = torch.load(pretrained, weights_only=True)
    if method != "scratch":  # fine-tuning starts from the pretrained weights: 3 small steps stay close
        assert not _states_equal(w["model"], pre["ema"])
    samples, grid, report = tmp_path / "s.npz", tmp_path / "s.png", tmp_path / "e.json"
    assert main(["sample", "--weights", str(out), "--n", "40", "--nfe", "4", "--out", str(samples),
                 "--grid", str(grid), "--no-progress"]) == 0
    with np.load(samples) as z:
        assert z["x"].shape == (40, 2) and np.isfinite(z["x"]).all() and int(z["nfe"]) == 4
        assert z["path_length"].shape == (40,)
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", "--weights", str(out), "--data", "2d:moons", "--n", "40", "--n-ref", "50", "--nfe",
                 "4",
                 "--out", str(report), "--no-progress"]) == 0
    m = json.loads(report.read_text())["metrics"]
    assert set(m) == {"fd", "w2", "path_length", "straightness", "nfe"} and m["nfe"] == 4
    assert all(np.isfinite(v) and v >= 0 for v in m.values())


def test_eval_of_samples_file_matches_eval_of_weights(pretrained, tmp_path):
    samples, e1, e2 = tmp_path / "s.npz", tmp_path / "e1.json", tmp_path / "e2.json"
    common = ["--nfe", "3", "--seed", "4", "--no-progress"]
    assert main(["sample", "--weights", str(pretrained), "--n", "30", "--out", str(samples), *common]) == 0
    assert main(["eval", "--weights", str(pretrained), "--data", "2d:moons", "--n", "30", "--out", str(e1),
                 *common]) == 0
    assert main(["eval", "--weights", str(pretrained), "--samples", str(samples), "--data", "2d:moons",
                 "--out", str(e2), *common]) == 0
    assert json.loads(e1.read_text())["metrics"] == json.loads(e2.read_text())["metrics"]


def test_sample_resumes_from_finished_chunks(pretrained, tmp_path):
    ck = tmp_path / "ck"
    base = ["sample", "--weights", str(pretrained), "--n", "50", "--nfe", "3", "--batch-size", "16",
            "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "ref.npz")]) == 0
    assert main([*base, "--out", str(tmp_path / "a.npz"), "--checkpoint-dir", str(ck)]) == 0
    chunks = sorted((ck / "samples").glob("chunk_*.pt"))
    assert len(chunks) == 4
    chunks[2].unlink()  # as if the run had been killed before chunk 2 was written
    marker = torch.load(chunks[0], weights_only=True)
    marker["x"] = marker["x"] + 1000.0  # a kept chunk is reused, not recomputed
    torch.save(marker, chunks[0])
    assert main([*base, "--out", str(tmp_path / "b.npz"), "--checkpoint-dir", str(ck)]) == 0
    with np.load(tmp_path / "ref.npz") as r, np.load(tmp_path / "b.npz") as b:
        np.testing.assert_array_equal(b["x"][16:], r["x"][16:])
        np.testing.assert_array_equal(b["x"][:16], r["x"][:16] + np.float32(1000.0))
    with pytest.raises(SystemExit):  # another command on the same directory is refused
        main([*base[:5], "60", *base[6:], "--out", str(tmp_path / "c.npz"), "--checkpoint-dir", str(ck)])


def test_finetune_resume_gives_the_same_weights(pretrained, tmp_path, capsys):
    ck = tmp_path / "ck"
    base = ["finetune", "--pretrained", str(pretrained), "--data", "2d:moons", "--method", "gft-coupling",
            "--cache-size", "32", "--solver-steps", "4", *TINY]
    assert main([*base, "--steps", "6", "--out", str(tmp_path / "ref.pt")]) == 0
    assert main([*base, "--steps", "6", "--out", str(tmp_path / "a.pt"), "--checkpoint-dir", str(ck),
                 "--checkpoint-every", "3"]) == 0
    ckpts = sorted(ck.glob("ckpt_*.pt"))
    ckpts[-1].unlink()  # killed after step 3
    capsys.readouterr()
    assert main([*base, "--steps", "6", "--out", str(tmp_path / "b.pt"), "--checkpoint-dir", str(ck),
                 "--checkpoint-every", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] == 3
    ref, b = (torch.load(tmp_path / f, weights_only=True) for f in ("ref.pt", "b.pt"))
    assert _states_equal(ref["model"], b["model"]) and _states_equal(ref["ema"], b["ema"])


def test_legacy_train_cli_weights_are_accepted(tmp_path):
    from gftlib.experiments import train_cli

    legacy = tmp_path / "legacy.pt"
    assert train_cli.main(["--task", "2d", "--steps", "2", "--batch-size", "8", "--n-data", "16", "--hidden",
                           "8", "--depth", "1", "--no-progress", "--out", str(legacy)]) == 0
    assert main(["sample", "--weights", str(legacy), "--n", "8", "--nfe", "2", "--out",
                 str(tmp_path / "s.npz"),
                 "--no-progress"]) == 0


@pytest.mark.slow
def test_normal_run_prints_no_warnings(pretrained, tmp_path):
    """A subprocess with every warning shown (-W default) stays silent apart from its JSON line."""
    env = _env()
    cmds = [["finetune", "--pretrained", str(pretrained), "--data", "2d:moons", "--method", "gft-drift",
             "--steps", "2", "--n-trajectories", "8", "--time-grid", "2", "--solver-steps", "2",
             "--out", str(tmp_path / "w.pt"), *TINY],
            ["eval", "--weights", str(tmp_path / "w.pt"), "--data", "2d:moons", "--n", "20", "--n-ref", "20",
             "--nfe", "2", "--out", str(tmp_path / "e.json"), "--no-progress"]]
    for cmd in cmds:
        run = subprocess.run([sys.executable, "-W", "default", "-m", "gftlib", *cmd], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stderr.strip() == "", run.stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_finetune_and_rank0_sampling(pretrained, tmp_path):
    def torchrun(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(_free_port()), "-m", "gftlib", *args, "--device", "cpu"]
        return subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)

    run = torchrun("finetune", "--pretrained", str(pretrained), "--data", "2d:moons", "--method", "ft-ot",
                   "--steps", "4", "--out", str(tmp_path / "w.pt"), *TINY)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.stdout.strip().splitlines()) == 1  # rank 0 reports, rank 1 does not
    w = torch.load(tmp_path / "w.pt", weights_only=True)
    assert w["history"][-1]["step"] == 4
    run = torchrun("sample", "--weights", str(tmp_path / "w.pt"), "--num-samples", "20", "--nfe", "3",
                   "--out", str(tmp_path / "ddp.npz"), "--no-progress")
    assert run.returncode == 0, run.stderr[-3000:]
    assert main(["sample", "--weights", str(tmp_path / "w.pt"), "--n", "20", "--nfe", "3",
                 "--out", str(tmp_path / "one.npz"), "--no-progress"]) == 0
    with np.load(tmp_path / "ddp.npz") as a, np.load(tmp_path / "one.npz") as b:
        np.testing.assert_array_equal(a["x"], b["x"])


def test_disk_data_folder_and_npz(tmp_path, capsys):
    """folder:PATH and npz:PATH train a fresh UNet; eval compares with their held-out split; an empty
    folder is refused naming the path."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs" / "nested"
    folder.mkdir(parents=True)
    for i in range(100):  # ~10 % land in the hashed held-out split (deterministic for these names)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    np.save(tmp_path / "arr.npy", rng.integers(0, 256, (100, 16, 16, 3), dtype=np.uint8))
    for data in (f"folder:{tmp_path / 'imgs'}", f"npz:{tmp_path / 'arr.npy'}"):
        out = tmp_path / "w.pt"
        assert main(["pretrain", "--data", data, "--model", "unet:tiny", "--image-size", "8", "--steps", "2",
                     "--batch-size", "4", "--n-data", "8", "--workers", "0", "--out", str(out),
                     "--no-progress"]) == 0
        assert torch.load(out, weights_only=True)["model_spec"]["config"]["image_size"] == 8
        report = tmp_path / "e.json"
        assert main(["eval", "--weights", str(out), "--data", data, "--n", "4", "--n-ref", "2", "--nfe", "1",
                     "--workers", "0", "--out", str(report), "--no-progress"]) == 0
        assert json.loads(report.read_text())["split"] == "heldout"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        main(["pretrain", "--data", f"folder:{empty}", "--model", "unet:tiny", "--steps", "2",
              "--out", str(tmp_path / "x.pt"), "--no-progress"])
    err = capsys.readouterr().err
    assert "--data" in err and str(empty) in err


def test_weights_file_of_a_torchcfm_net_holds_each_network_once(tmp_path):
    """torchcfm's ``net_model`` / ``ema_model`` in a weights file share the storages of ``model`` /
    ``ema`` (torch.save writes a shared storage once): the file is about two networks, not four."""
    from gftlib.cli import weights
    from gftlib.models import TorchCFMVelocity, count_parameters, load_torchcfm

    small = dict(dim=(3, 16, 16), num_channels=32, num_res_blocks=1, channel_mult=[1, 2],
                 attention_resolutions="8", num_head_channels=16)
    torch.manual_seed(0)
    net, ema = TorchCFMVelocity(**small), TorchCFMVelocity(**small)
    path = weights.save(tmp_path / "w.pt", model=net, ema_model=ema,
                        model_spec={"kind": "torchcfm", "config": net.config}, extra={})
    one_net = 4 * count_parameters(net)  # float32 bytes (torchcfm's UNet has no buffers)
    assert 2 * one_net <= path.stat().st_size < 2 * one_net + one_net // 4
    raw = torch.load(path, weights_only=True)
    for ours, theirs in (("model", "net_model"), ("ema", "ema_model")):
        assert list(raw[ours]) == [f"net.{k}" for k in raw[theirs]]
        assert all(raw[ours][f"net.{k}"].data_ptr() == v.data_ptr() for k, v in raw[theirs].items())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.2, 0.9])
    with torch.no_grad():
        assert torch.equal(load_torchcfm(path, **small)(x, t), ema.eval()(x, t))
        assert torch.equal(load_torchcfm(path, ema=False, **small)(x, t), net.eval()(x, t))
