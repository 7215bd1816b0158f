"""The command line: `inception models` and error handling."""

import subprocess
import sys

import pytest

from inception import __version__
from inception.cli import main


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"googlenet", "googlenet_cifar", "inception_v3", "inception_v4", "inception_resnet_v2"}
    assert "6.62M" in lines["googlenet"] and "1.50" in lines["googlenet"] and "224x224" in lines["googlenet"]
    assert "42.68M" in lines["inception_v4"] and "12.25" in lines["inception_v4"]
    assert "55.84M" in lines["inception_resnet_v2"] and " 75 " in lines["inception_resnet_v2"]
    assert "23.83M" in lines["inception_v3"] and "5.71" in lines["inception_v3"]


def test_model_summary(capsys):
    assert main(["models", "inception_v3"]) == 0
    out = capsys.readouterr().out
    assert "parameters 23,834,568" in out and "MACs 5.71 G" in out
    assert "Mixed_7c" in out and "2048x8x8" in out and "minimum 75x75" in out


def test_unknown_model_is_one_line(capsys):
    assert main(["models", "inceptoin_v4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown model 'inceptoin_v4': did you mean 'inception_v4'?"


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "inception", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"inception {__version__}"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "models" in capsys.readouterr().out


def test_bench_command_on_cpu(capsys, tmp_path):
    rc = main(["bench", "googlenet", "--image-size", "32", "--batch-size", "4", "--steps", "2", "--warmup", "1",
               "--device", "cpu", "--dataset", "digits", "--data-steps", "2", "--json", str(tmp_path / "b.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "img/s" in out and "MFU" in out and "train" in out and "infer" in out
    assert "compute-bound" in out or "input-bound" in out
    assert (tmp_path / "b.json").is_file()
    assert main(["bench", "inception_v3", "--image-size", "40", "--steps", "1", "--device", "cpu"]) == 2
    assert "minimum 75" in capsys.readouterr().err
