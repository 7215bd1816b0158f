"""The command line: `inception models` and error handling."""

import subprocess
import sys

import pytest
import yaml

from inception import __version__
from inception.cli import build_parser, main
from inception.config import choices, load_config
from inception.models import get_model_info


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"googlenet", "googlenet_cifar", "googlenet_v1", "inception_v3", "inception_v4",
                          "inception_resnet_v2"}
    assert "11.54M" in lines["googlenet_v1"] and " 61 " in lines["googlenet_v1"]
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


def test_choice_flags_list_every_value_the_config_accepts():
    """--sched, --opt, --dataset and --precision help from the same lists the config validates."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {a.option_strings[0]: " ".join(a.help.split()) for a in train._actions if a.help}
    for flag, key in [("--sched", "schedule.name"), ("--opt", "optim.name"), ("--dataset", "data.dataset"),
                      ("--precision", "train.precision")]:
        assert len(choices(key)) >= 3 and all(c in helps[flag] for c in choices(key)), (flag, helps[flag])
    assert "onecycle" in helps["--sched"] and "flat_cosine" in helps["--sched"]


@pytest.mark.parametrize("module,extra", [("onnx", "export"), ("onnxruntime.quantization", "export"),
                                          ("matplotlib.pyplot", "plot"), ("fastapi", "serve")])
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, module, extra):
    import inception.cli as cli

    def missing(args):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)
    monkeypatch.setattr(cli, "cmd_models", missing)
    assert main(["models"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: `inception models` needs the '{extra}' extra ({module} is not installed): "
                   f"pip install 'inception[{extra}]'")


def test_a_missing_module_of_no_extra_is_a_bug_and_raises(monkeypatch):
    import inception.cli as cli

    def missing(args):
        raise ModuleNotFoundError("No module named 'nosuchthing'", name="nosuchthing")
    monkeypatch.setattr(cli, "cmd_models", missing)
    with pytest.raises(ModuleNotFoundError):
        main(["models"])


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


def _printed_config(capsys, *argv):
    assert main(["train", *argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_train_flags_for_the_everyday_knobs(capsys):
    cfg = _printed_config(capsys, "--opt", "adamw", "--momentum", "0.8", "--wd", "1e-4", "--sched", "constant",
                          "--warmup-epochs", "0.5", "--label-smoothing", "0.1")
    assert (cfg["optim"]["name"], cfg["optim"]["momentum"], cfg["optim"]["weight_decay"]) == ("adamw", 0.8, 1e-4)
    assert (cfg["schedule"]["name"], cfg["schedule"]["warmup_epochs"]) == ("constant", 0.5)
    assert cfg["train"]["label_smoothing"] == 0.1
    assert _printed_config(capsys, "--weight-decay", "5E-5")["optim"]["weight_decay"] == 5e-5
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, key, default in [("--opt", "optim.name", "'sgd'"), ("--momentum", "optim.momentum", "0.9"),
                               ("--wd WD, --weight-decay", "optim.weight_decay", "0.0001"),
                               ("--sched", "schedule.name", "'cosine'"),
                               ("--warmup-epochs", "schedule.warmup_epochs", "0.0"),
                               ("--label-smoothing", "train.label_smoothing", "0.0")]:
        assert flag in help_text and f"[{key}; default: the recipe's, else {default}]" in help_text


def test_set_accepts_float_spellings_and_paths_into_mappings(capsys):
    cfg = _printed_config(capsys, "--set", "optim.weight_decay=1e-4", "--set", "schedule.eta_min=1E-6",
                          "--set", "model.options={aux_logits: true, dropout: 0.3}",
                          "--set", "model.options.aux_logits=false")
    assert cfg["optim"]["weight_decay"] == 1e-4 and cfg["schedule"]["eta_min"] == 1e-6
    assert cfg["model"]["options"] == {"aux_logits": False, "dropout": 0.3}
    assert main(["train", "--set", "train.epochs=3.5", "--print-config"]) == 2
    assert capsys.readouterr().err.strip() == "error: config key 'train.epochs' must be an integer, got 3.5"
    assert main(["train", "--set", "model.option.aux_logits=false", "--print-config"]) == 2
    assert "did you mean 'model.options'?" in capsys.readouterr().err


def test_print_config_marks_unused_keys_and_loads_back(capsys, tmp_path):
    assert main(["train", "--opt", "rmsprop", "--set", "optim.eps=1", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "  betas: [0.9, 0.999]  # not used with optim.name=rmsprop\n" in text
    assert "  milestones: []  # not used with schedule.name=cosine\n" in text
    assert "  eps: 1.0\n" in text and "  alpha: 0.9\n" in text
    (tmp_path / "printed.yaml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "printed.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == text
    assert load_config(tmp_path / "printed.yaml").optim.name == "rmsprop"


def test_verbosity_flags_after_the_command(capsys):
    parser = build_parser()
    for argv, quiet, verbose in [(["train", "-q"], True, False), (["-q", "train"], True, False),
                                 (["train"], False, False), (["models", "-v"], False, True),
                                 (["-v", "models", "--quiet"], True, True), (["runs", "-q"], True, False)]:
        args = parser.parse_args(argv)
        assert (args.quiet, args.verbose) == (quiet, verbose), argv
    assert main(["train", "--help-config", "-q"]) == 0
    assert "crop_pct:" in capsys.readouterr().out
    assert main(["models", "-v"]) == 0
    assert "googlenet" in capsys.readouterr().out


def test_model_summary_tells_the_initialisation(capsys):
    assert main(["models", "googlenet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "init (from scratch): He-normal convolutions" in out and "truncated normal with std 0.01" in out
    for name in ("googlenet_cifar", "inception_v3", "inception_v4", "inception_resnet_v2"):
        assert "He-normal" in get_model_info(name).init


def test_model_summary_reads_the_card(capsys):
    assert main(["models", "inception_v4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "origin: Inception v4 of MindSpore" in out
    assert "loads weights of: timm, MindSpore (variant=mindspore), PaddleClas (variant=paddleclas)" in out
    assert "vendor configs: mindspore inceptionv4, paddleclas InceptionV4" in out
