"""`gft` rejects bad arguments before any work, naming the option, the value and what is allowed."""

from __future__ import annotations

import pytest

from gftlib.cli import main


def _fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture()
def weights_file(tmp_path):
    """A real (tiny) gftlib weights file, so that only the argument under test is wrong."""
    out = tmp_path / "pre.pt"
    assert main(["pretrain", "--data", "2d:moons", "--model", "mlp", "--hidden", "8", "--depth", "1",
                 "--steps", "1", "--batch-size", "8", "--n-data", "16", "--out", str(out),
                 "--no-progress"]) == 0
    return str(out)


@pytest.mark.parametrize("argv, expected", [
    (["pretrain", "--data", "2d:moons", "--model", "mlp", "--steps", "0", "--out", "w.pt"],
     ["--steps", "'0'", "an integer >= 1"]),
    (["pretrain", "--data", "foo:bar", "--model", "mlp", "--steps", "5", "--out", "w.pt"],
     ["--data", "'foo:bar'", "2d:NAME", "wilds-NAME:ROOT", "folder:PATH"]),
    (["pretrain", "--data", "2d:moonz", "--model", "mlp", "--steps", "5", "--out", "w.pt"],
     ["--data", "'2d:moonz'", "2d:", "moons"]),
    (["pretrain", "--data", "patches:cats", "--model", "unet:tiny", "--steps", "5", "--out", "w.pt"],
     ["--data", "'patches:cats'", "ihc", "natural"]),
    (["pretrain", "--data", "wilds-camelyon17:/no/such/root", "--model", "unet:tiny", "--steps", "5",
      "--out", "w.pt"], ["--data", "/no/such/root", "existing directory"]),
    (["pretrain", "--data", "2d:moons", "--model", "unet:huge", "--steps", "5", "--out", "w.pt"],
     ["--model", "'unet:huge'", "unet:tiny|small|cifar10"]),
    (["pretrain", "--data", "2d:moons", "--model", "unet:tiny", "--steps", "5", "--out", "w.pt"],
     ["--model", "'unet:tiny'", "mlp"]),
    (["pretrain", "--data", "patches:ihc", "--model", "mlp", "--steps", "5", "--out", "w.pt"],
     ["--model", "'mlp'", "unet:tiny|small|cifar10"]),
    (["pretrain", "--data", "2d:moons", "--model", "mlp", "--steps", "5", "--out", "w.txt"],
     ["--out", "'w.txt'", ".pt"]),
    (["pretrain", "--data", "2d:moons", "--model", "mlp", "--steps", "5", "--out", "w.pt", "--ema-decay",
      "1"],
     ["--ema-decay", "1.0", "[0, 1)"]),
    (["pretrain", "--data", "2d:moons", "--model", "mlp", "--steps", "5", "--out", "w.pt", "--lr", "-1"],
     ["--lr", "'-1'", "> 0"]),
    (["pretrain", "--data", "2d:moons", "--model", "mlp", "--steps", "5", "--out", "w.pt",
      "--checkpoint-every", "2"], ["--checkpoint-every", "--checkpoint-dir"]),
    (["pretrain", "--data", "2d:moons", "--model", "mlp", "--steps", "5", "--out", "w.pt",
      "--where", "center=3"], ["--where", "wilds-NAME:ROOT"]),
    (["finetune", "--pretrained", "/no/such.pt", "--data", "2d:moons", "--method", "ft", "--steps", "5",
      "--out", "w.pt"], ["--pretrained", "/no/such.pt", "torchcfm:PATH", "no such file"]),
    (["finetune", "--pretrained", "mlp", "--data", "2d:moons", "--method", "ft", "--steps", "5",
      "--out", "w.pt"], ["--pretrained", "'mlp'", "a gftlib weights file, torchcfm:PATH"]),
    (["sample", "--weights", "mlp", "--n", "4", "--nfe", "2", "--solver", "rk5", "--out", "s.npz"],
     ["--solver", "'rk5'", "euler", "midpoint", "rk4", "dopri5"]),
    (["sample", "--weights", "mlp", "--n", "4", "--nfe", "2", "--out", "s.npy"], ["--out", "'s.npy'",
                                                                                  ".npz"]),
    (["sample", "--weights", "mlp", "--n", "4", "--nfe", "2", "--out", "s.npz", "--grid", "g.jpg"],
     ["--grid", "'g.jpg'", ".png"]),
    (["eval", "--weights", "mlp", "--data", "2d:moons", "--metrics", "fd,kid", "--out", "e.json"],
     ["--metrics", "'fd,kid'", "fd,fid,path_length,nfe,w2"]),
    (["eval", "--weights", "mlp", "--data", "2d:moons", "--metrics", "fd,fd", "--out", "e.json"],
     ["--metrics", "'fd,fd'", "without repeats"]),
    (["eval", "--weights", "mlp", "--data", "2d:moons", "--metrics", "fid", "--out", "e.json"],
     ["--metrics", "'fid'", "without fid for 2-D"]),
    (["eval", "--weights", "unet:tiny", "--data", "patches:ihc", "--metrics", "fid", "--out", "e.json"],
     ["--inception", "None", "Inception TorchScript file"]),
    (["eval", "--weights", "mlp", "--data", "2d:moons", "--n", "1", "--out", "e.json"],
     ["--n", "1", "an integer >= 2"]),
])
def test_bad_argument_is_named_with_allowed_values(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _fails(argv, capsys)
    for piece in expected:
        assert piece in err, (piece, err)
    assert not list(tmp_path.iterdir()), "nothing may be written for a rejected command"


def test_bad_method_and_mismatched_weights(weights_file, capsys, tmp_path):
    err = _fails(["finetune", "--pretrained", weights_file, "--data", "2d:moons", "--method", "gft",
                  "--steps", "5", "--out", str(tmp_path / "w.pt")], capsys)
    assert "--method" in err and "'gft'" in err and "gft-coupling" in err and "reflow" in err
    err = _fails(["finetune", "--pretrained", weights_file, "--data", "patches:ihc", "--method", "ft",
                  "--steps", "5", "--out", str(tmp_path / "w.pt")], capsys)
    assert "--pretrained" in err
    err = _fails(["finetune", "--pretrained", weights_file, "--data", "2d:moons", "--method", "ft",
                  "--steps", "5",
                  "--out", str(tmp_path / "w.pt"), "--torchcfm-out", str(tmp_path / "t.pt")], capsys)
    assert "--torchcfm-out" in err and "only for torchcfm networks" in err
    err = _fails(["eval", "--weights", weights_file, "--data", "patches:ihc", "--out", str(tmp_path / "e.json"),
                  "--no-progress"], capsys)
    assert "--data" in err and "'patches:ihc'" in err and "2d:NAME for a 2-D network" in err
    not_weights = tmp_path / "plain.pt"
    import torch

    torch.save({"net_model": {}, "ema_model": {}}, not_weights)
    err = _fails(["sample", "--weights", str(not_weights), "--n", "2", "--nfe", "1",
                  "--out", str(tmp_path / "s.npz")], capsys)
    assert "--weights" in err and "gftlib weights file" in err and "torchcfm:PATH" in err
    assert not (tmp_path / "w.pt").exists() and not (tmp_path / "s.npz").exists()
