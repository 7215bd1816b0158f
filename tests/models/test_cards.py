"""The model cards: one complete, declarative card per architecture in its own file, that
agrees with the model it builds; everything that needs to know an architecture reads it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch
from torch import nn

import inception.models as models_pkg
from inception.models import (
    DataConfig,
    InceptionBase,
    ModelCard,
    WeightLayout,
    count_macs,
    count_params,
    create_model,
    get_card,
    get_model_info,
    list_models,
    load_pretrained,
    register_model,
)
from inception.models.registry import unregister_model
from inception.vendor_config import MODELS

from ..conftest import SMALL_SIZE

CARDS = [get_card(name) for name in list_models()]


def test_every_model_file_card_is_registered_and_in_the_tests_list():
    """The package finds each model file's CARDS by itself, and the tests' model list
    (conftest.SMALL_SIZE) names every registered model: adding an architecture is its file and
    that line."""
    declared = []
    for module in pkgutil.iter_modules(models_pkg.__path__):
        declared += [c.name for c in getattr(importlib.import_module(f"inception.models.{module.name}"), "CARDS", ())]
    assert sorted(declared) == list_models() and len(declared) == len(set(declared)) == 6
    assert sorted(SMALL_SIZE) == list_models(), "add the new model to SMALL_SIZE in tests/conftest.py"


def test_no_other_module_lists_the_models():
    """No table keyed by model name outside the model files: a dict, set, list or tuple literal
    with two or more registered names in it (dict keys that are tuples included) anywhere else in
    the package is another place to edit. The GPU report's targets (two figures it checks) are
    not a model table."""
    names = set(list_models())
    root = Path(models_pkg.__file__).resolve().parents[1]
    model_files = {Path(importlib.import_module(f"inception.models.{m.name}").__file__).resolve()
                   for m in pkgutil.iter_modules(models_pkg.__path__)
                   if hasattr(importlib.import_module(f"inception.models.{m.name}"), "CARDS")}
    offenders = []
    for path in root.rglob("*.py"):
        if path.resolve() in model_files:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Dict, ast.Set, ast.List, ast.Tuple)):
                elts = node.keys if isinstance(node, ast.Dict) else node.elts
                elts = [x for e in elts if e is not None for x in (e.elts if isinstance(e, ast.Tuple) else [e])]
                found = {e.value for e in elts if isinstance(e, ast.Constant) and e.value in names}
                if len(found) >= 2 and not (path.name == "report.py" and found == {"googlenet", "inception_v4"}):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} {sorted(found)}")
    assert not offenders, f"model names listed outside the model cards: {offenders}"


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_card_is_complete(card):
    assert card.missing() == [], f"card '{card.name}' lacks {card.missing()}"
    dc = card.data_config
    assert dc.input_size[0] == 3 and 0 < dc.min_input_size <= dc.input_size[1] == dc.input_size[2]
    assert len(dc.mean) == len(dc.std) == 3 and 0 < dc.crop_pct <= 1 and dc.interpolation in ("bilinear", "bicubic")
    assert len(card.description) > 10 and len(card.origin) > 10 and len(card.init) > 20
    for layout in card.layouts:
        assert layout.source in ("torchvision", "timm", "torchvision/timm", "inception", "mindspore", "paddle")
        assert layout.vendor == (layout.renames is not None), "vendor layouts (and only they) rename every key"


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_card_agrees_with_the_model_it_builds(card):
    """params, MACs, features and preprocessing on the card are those of the built model."""
    with torch.device("meta"):
        model = create_model(card.name)
    assert count_params(model) == card.params
    assert count_macs(model, card.data_config.input_size) == card.macs
    assert model.num_features == card.num_features
    assert model.data_config == card.data_config == card.data_config_for({})
    with torch.device("meta"):
        gray = create_model(card.name, in_chans=1)
    assert gray.data_config == card.data_config_for({"in_chans": 1}) and gray.data_config.input_size[0] == 1
    for option, by_value in card.data_config_options.items():
        for value, dc in by_value.items():
            with torch.device("meta"):
                assert create_model(card.name, **{option: value}).data_config == dc == \
                    card.data_config_for({option: value})


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_layouts_fit_the_model(card):
    """Each layout's marker names a tensor of the model built with the layout's options (after
    the aliases), and a vendor layout's table renames onto exactly the model's weights."""
    for layout in card.layouts:
        with torch.device("meta"):
            model = create_model(card.name, **layout.options)
        ours = model.state_dict()
        if not layout.vendor:
            marker = layout.marker
            for theirs, own in layout.aliases:
                marker = own + marker[len(theirs):] if marker.startswith(theirs) else marker
            assert marker in ours, (card.name, layout.source, layout.marker)
            continue
        table = layout.renames()
        assert layout.marker in table.names
        targets = {dst for dst, _ in table.names.values() if not dst.startswith("head:")}
        expected = {k for k in ours if not k.endswith("num_batches_tracked")}
        if layout.fold is not None:          # a head folded into our classifier: the rest is renamed one to one
            assert expected - targets == {k for k in expected if k.startswith(model.classifier_keys)}
            expected -= expected - targets
        assert targets == expected, sorted(targets ^ expected)[:5]
        assert {f"{bn}.num_batches_tracked" for bn in table.bns} <= set(ours)


def test_vendor_names_come_from_the_cards():
    """convert-config's table of vendor model names is the cards' (VendorName), and each
    vendor's options build the model."""
    assert MODELS == {"mindspore": {"googlenet": ("googlenet", {"variant": "mindspore"}),
                                    "inceptionv4": ("inception_v4", {"variant": "mindspore"})},
                      "paddleclas": {"GoogLeNet": ("googlenet_v1", {}),
                                     "InceptionV4": ("inception_v4", {"variant": "paddleclas"})}}
    for zoo in MODELS.values():
        for name, options in zoo.values():
            with torch.device("meta"):
                create_model(name, **options)


def test_the_data_config_is_never_set_on_a_model(tmp_path):
    """A model's data_config is its card's, read only; weights bring theirs in the result."""
    model = create_model("googlenet", num_classes=3)
    with pytest.raises(AttributeError):
        model.data_config = model.data_config.replace(mean=(0.5, 0.5, 0.5))
    torch.save(model.state_dict(), tmp_path / "tv.pth")            # a raw torchvision-layout state dict
    other = create_model("googlenet", num_classes=3)
    result = load_pretrained(other, tmp_path / "tv.pth")
    assert result.data_config.mean == (0.5, 0.5, 0.5) and other.data_config == get_card("googlenet").data_config


class _Tiny(InceptionBase):
    classifier_name = "head"
    classifier_keys = ("head.",)

    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.arch, self.num_classes, self.num_features = "tiny", num_classes, 8
        self._data_config = TINY_CARD.data_config_for({"in_chans": in_chans})
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU())
        self.global_pool, self.head_drop = nn.AdaptiveAvgPool2d(1), nn.Identity()
        self.head = self._make_classifier(num_classes)

    def forward_features(self, x):
        return self.body(x)


TINY_CARD = ModelCard(
    name="tiny", builder=_Tiny, description="a plugin's model, for this test", origin="the tests",
    data_config=DataConfig(input_size=(3, 16, 16), min_input_size=4, mean=(0.5,) * 3, std=(0.25,) * 3),
    params=9_224, macs=3 * 8 * 9 * 256 + 8 * 1000, num_features=8, init="PyTorch's defaults",
    layouts=(WeightLayout("timm", "body.0.weight", aliases=(("classifier.", "head."),)),),
)


def test_a_new_card_is_all_it_takes(tmp_path):
    """A model registered by its card alone is listed, described, built, and loads weights in
    its layout (with the card's key aliases) through the pretrained loader."""
    register_model(TINY_CARD)
    try:
        assert "tiny" in list_models()
        info = get_model_info("tiny")
        assert (info.params, info.data_config, info.origin) == (9_224, TINY_CARD.data_config, "the tests")
        model = create_model("tiny", num_classes=2)
        theirs = {k.replace("head.", "classifier."): v + 1 for k, v in model.state_dict().items()}
        torch.save(theirs, tmp_path / "w.pth")
        result = load_pretrained(model, tmp_path / "w.pth")
        assert result.arch == "tiny" and result.source == "timm" and result.data_config.mean == (0.5,) * 3
        assert torch.equal(model.head.weight, theirs["classifier.weight"])
        with torch.device("meta"):
            assert count_params(create_model("tiny")) == TINY_CARD.params
    finally:
        unregister_model("tiny")
    assert "tiny" not in list_models()


def test_an_incomplete_card_is_refused():
    with pytest.raises(ValueError, match="incomplete: init"):
        register_model(ModelCard(name="half", builder=_Tiny, description="a model without its init",
                                 origin="the tests", data_config=TINY_CARD.data_config, params=1, macs=1,
                                 num_features=8, init=""))
    with pytest.raises(TypeError, match="ModelCard"):
        register_model("half")
    assert "half" not in list_models()
