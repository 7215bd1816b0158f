"""What several packages share, in a leaf module that imports nothing else of ``inception``:
the preprocessing spec a model carries (:class:`DataConfig`) and the key that deployment
files store their metadata under (:data:`METADATA_KEY`). ``models``, ``data`` and
``metadata`` import these from here, so none of them needs another."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

METADATA_KEY = "inception"              # ONNX metadata_props / safetensors header key holding the JSON


@dataclass(frozen=True)
class DataConfig:
    """Preprocessing a model expects: carried by every model as ``model.data_config``."""

    input_size: tuple[int, int, int]
    min_input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> "DataConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "min_input_size": self.min_input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }
