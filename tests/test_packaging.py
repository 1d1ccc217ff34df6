"""The installable product: the ``wordsight`` command, packaged configs found from any folder, pip extras
named in one line when missing, and a wheel that carries its data files."""

import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from evaluation.__main__ import main as evaluation_main
from foundation import extras
from foundation.config_files import CONFIG_DIR, packaged_config, packaged_config_args
from wordsight import commands
from wordsight.training import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


def test_help_lists_every_command_without_importing_torch(tmp_path):
    script = "import sys; from wordsight.commands import main; code = main(['--help']); " \
             "print('torch loaded' if 'torch' in sys.modules else 'light'); sys.exit(code)"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name, command in commands.COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(command.summary)}$", done.stdout, re.MULTILINE), done.stdout
    assert done.stdout.splitlines()[-1] == "light"


def test_every_command_names_a_module_with_a_main():
    for name, command in commands.COMMANDS.items():
        assert importlib.util.find_spec(command.module) is not None, f"wordsight {name}: no {command.module}"


def test_an_unknown_command_is_one_line(capsys):
    assert commands.main(["frobnicate"]) == 2
    line = one_error(capsys)
    assert "unknown command 'frobnicate'" in line and "tag, search, index" in line


def test_arguments_pass_through_and_index_build_means_build_images(monkeypatch):
    seen = []
    monkeypatch.setattr(commands, "load", lambda command: lambda argv: seen.append((command.module, argv)) or 7)
    assert commands.main(["index", "build", "DIR", "--out", "X"]) == 7
    assert commands.main(["tag", "--help"]) == 7
    assert seen == [("indexing.__main__", ["build-images", "DIR", "--out", "X"]), ("wordsight.tag", ["--help"])]


@pytest.mark.parametrize("door, argv", [
    (commands.main, ["train", "fit", "--config", "fashion_mnist.yaml"]),
    (commands.main, ["eval", "--config", "fashion_mnist.yaml", "--checkpoint", "x.ckpt"]),
    (evaluation_main, ["--config", "fashion_mnist.yaml", "--checkpoint", "x.ckpt"]),
    (commands.main, ["serve", "--index", "x"]),
])  # fmt: skip
def test_a_missing_extra_names_the_pip_command(door, argv, monkeypatch, capsys):
    absent = {"pytorch_lightning", "uvicorn"}
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda module: module not in absent and real(module))
    assert door(argv) == 2
    line = one_error(capsys)
    extra = "web" if "serve" in argv else "train"
    assert line.endswith(f"pip install 'wordsight[{extra}]'") and ("pytorch_lightning" in line or "uvicorn" in line)


def test_each_extra_lists_the_modules_of_its_pyproject_packages():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    import_names = {"scikit_image": "skimage"}  # distributions whose module is named otherwise
    for extra, modules in extras.EXTRA_MODULES.items():
        names = [re.match(r"[A-Za-z0-9_.-]+", spec).group().lower().replace("-", "_") for spec in declared[extra]]
        assert [import_names.get(name, name) for name in names] == list(modules), extra
    assert set(declared) - {"all", "test"} == set(extras.EXTRA_MODULES)


def test_a_config_name_finds_the_packaged_file_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged_config("fashion_mnist.yaml") == str(CONFIG_DIR / "fashion_mnist.yaml")
    assert packaged_config("configs/base/data.yaml") == str(CONFIG_DIR / "base" / "data.yaml")
    assert packaged_config("no_such.yaml") == "no_such.yaml"  # the parser names what is missing
    (tmp_path / "fashion_mnist.yaml").write_text("model: {lr: 0.5}\n")
    assert packaged_config("fashion_mnist.yaml") == "fashion_mnist.yaml"  # a file here wins
    argv = packaged_config_args(["fit", "--config=image_folder.yaml", "--config", "fashion_mnist.yaml", "--x", "y"])
    assert argv == ["fit", f"--config={CONFIG_DIR / 'image_folder.yaml'}", "--config", "fashion_mnist.yaml", "--x", "y"]


def test_training_reads_a_packaged_config_from_another_folder(tmp_path, monkeypatch, capsys):
    """Parsing gets as far as the config's own data section: the file was found and read."""
    monkeypatch.chdir(tmp_path)
    assert train_main(["fit", "--config", "image_folder.yaml", "--data.root", str(tmp_path / "none")]) == 2
    assert f"data root {tmp_path / 'none'} is not a folder" in capsys.readouterr().err


def tracked_copy(target: Path) -> Path:
    """The committed and staged files of this checkout, copied: building a wheel writes build/ beside them."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=ROOT, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes((ROOT / name).read_bytes())
    return target


def test_the_wheel_carries_the_data_files_and_the_command(tmp_path):
    source = tracked_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("wordsight-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = [path.relative_to(ROOT).as_posix() for pattern in (
        "configs/*.yaml", "configs/base/*.yaml", "webapp/templates/*.html", "webapp/static/*",
        "taxonomy/imagenet_wordnet.json.gz", "taxonomy/WORDNET_LICENSE", "models/data/*.npz", "wordsight/*.py",
    ) for path in ROOT.glob(pattern)]  # fmt: skip
    assert len(wanted) > 25 and not set(wanted) - names, sorted(set(wanted) - names)
    assert not {name for name in names if name.startswith(("tests/", "benchmarks/", "docs/"))}
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "wordsight = wordsight.commands:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
