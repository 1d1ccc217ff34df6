"""Training given hostile or broken configs and trainer options: one `error:` line and exit 2, before any
work. Each case runs in-process: parsing fails long before any training."""

from pathlib import Path

import pytest

from train import main as train_main

ROOT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "image_folder.yaml")
DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit many times over
ALIAS_CHAIN = "a0: &a0 [x]\n" + "".join(f"a{k}: &a{k} [*a{k - 1}]\n" for k in range(1, 2000))  # deep once expanded
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def run(capsys, *args) -> str:
    assert train_main(["fit", "--config", ROOT_CONFIG, "--data.root", ".", *args]) == 2
    return one_error(capsys)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  loss: l2\n", "unknown model.loss 'l2'"),
        ("model:\n  lossx: 3\n", "does not accept option 'model.lossx'"),
        ("model:\n  lr: fast\n", "model.lr"),
        (BILLION_LAUGHS, "expands to more than"),
        ("a: &a [*a]\n", "refers to itself"),
        (DEEP, "nests deeper than 100 levels"),
        ("a:\n" + "".join(f"{'  ' * k}b:\n" for k in range(1, 150)), "nests deeper than 100 levels"),
        (ALIAS_CHAIN, "nests deeper than 100 levels"),
        ("model: [unclosed\n", "is not valid YAML"),
    ],
)
def test_a_bad_config_file_is_one_line(text, message, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert message in run(capsys, "--config", str(config))


def test_a_binary_config_file_is_one_line(tmp_path, capsys):
    config = tmp_path / "model.ckpt"
    config.write_bytes(b"PK\x03\x04\x00\x00\xff\xfe binary")
    assert "is not UTF-8 text" in run(capsys, "--config", str(config))


@pytest.mark.parametrize("devices", ["99", "-1", "0"])
def test_a_cpu_process_count_out_of_range_is_refused(devices, tiny_folder, tiny_vectors, capsys):
    line = run(capsys, "--data.root", str(tiny_folder), "--data.vectors", str(tiny_vectors),
               "--trainer.accelerator", "cpu", "--trainer.devices", devices)  # fmt: skip
    assert f"--trainer.devices {devices} on the CPU" in line and "from 1 to" in line


def test_an_unwritable_checkpoint_folder_is_refused_before_training(tiny_folder, tiny_vectors, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the checkpoint folder should go")
    code = train_main([
        "fit", "--config", ROOT_CONFIG, "--data.root", str(tiny_folder), "--data.vectors", str(tiny_vectors),
        "--data.cache_dir", str(tmp_path / "cache"), "--model.weights", "random", "--model.image_size", "32",
        "--model.hidden_dim", "16", "--trainer.logger", "false", "--trainer.accelerator", "cpu",
        "--trainer.callbacks.dirpath", str(tmp_path / "taken" / "ckpt"), "--trainer.default_root_dir", str(tmp_path),
    ])  # fmt: skip
    assert code == 2
    assert "is a file, not a folder" in one_error(capsys)
    assert not (tmp_path / "cache").exists()  # refused before the feature extraction
