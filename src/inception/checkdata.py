"""``inception check-data``: scan a dataset before training and report what would go wrong.

Every file is decoded in full, in worker processes, exactly as training would decode it
(:func:`inception.data.folder.load_image`). Reported:

* problems (training would skip these with ``data.bad_image: skip``, or stop with
  ``error``): corrupt or truncated images, empty files, files that are not images,
  images over PIL's decompression-bomb limit;
* notes: images that are converted on the way in (CMYK, 16-bit, palette with
  transparency, grayscale), images smaller than the model input;
* per split and class: the image counts, empty classes, classes missing from a split.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .data.folder import find_classes, load_image, open_image, read_list
from .errors import UserError

_CONVERTED = {"CMYK": "CMYK", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer",
              "F": "floating point", "L": "grayscale", "LA": "grayscale", "1": "1-bit", "P": "palette",
              "PA": "palette", "RGBA": "RGBA"}


@dataclass
class DataReport:
    root: str
    kind: str                                              # folder or list
    counts: dict[str, dict[str, int]]                      # split -> class -> readable images
    problems: list[tuple[str, str]] = field(default_factory=list)     # (path, reason)
    notes: Counter = field(default_factory=Counter)        # what -> how many
    note_examples: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, max_listed: int = 30) -> list[str]:
        out = [f"dataset {self.root} ({self.kind})"]
        for split, classes in self.counts.items():
            total = sum(classes.values())
            out.append(f"{split}: {total} readable images in {len(classes)} classes")
            width = max((len(c) for c in classes), default=0)
            for name, n in classes.items():
                out.append(f"  {name.ljust(width)}  {n}")
            if classes:
                lo, hi = min(classes.values()), max(classes.values())
                if lo and hi / lo >= 2:
                    out.append(f"  classes are imbalanced: {lo} to {hi} images per class")
        out += [f"warning: {w}" for w in self.warnings]
        for what, n in sorted(self.notes.items()):
            out.append(f"note: {n} image(s) {what}, e.g. {self.note_examples[what]}")
        if self.problems:
            out.append(f"{len(self.problems)} file(s) cannot be used (training skips them with data.bad_image: skip):")
            for path, reason in self.problems[:max_listed]:
                out.append(f"  {path}: {reason}")
            if len(self.problems) > max_listed:
                out.append(f"  ... and {len(self.problems) - max_listed} more")
        else:
            out.append("no problems found")
        return out


class _Probe(Dataset):
    def __init__(self, paths: list[str], min_size: int) -> None:
        self.paths, self.min_size = paths, min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            if os.path.getsize(path) == 0:
                return i, "error", "empty file (0 bytes)"
            with open_image(path) as im:          # the formats and size limit training decodes under
                mode = im.mode
                transparent = mode == "P" and "transparency" in im.info
            image = load_image(path)
        except Exception as e:   # load_image's ImageReadError, or PIL failing on open
            reason = str(e).split(" (", 1)[-1].rsplit(");", 1)[0] if "cannot read image" in str(e) else str(e)
            return i, "error", reason
        notes = []
        if mode in _CONVERTED and mode != "L":
            notes.append(f"are {_CONVERTED[mode]}{' with transparency' if transparent else ''} "
                         "(converted to RGB)")
        elif mode == "L":
            notes.append("are grayscale (converted to RGB)")
        if min(image.size) < self.min_size:
            notes.append(f"are smaller than {self.min_size} px on a side (upscaled)")
        return i, "ok", notes


def _collate(items):
    return items


def check_data(path: str | Path, *, dataset: str = "auto", workers: int | None = None, min_size: int = 32,
               progress: bool = False) -> DataReport:
    """Scan a folder dataset (``root/<split>/<class>/*`` or ``root/<class>/*``) or a list
    file, decoding every file; see the module docstring."""
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"'{root}' does not exist; give a dataset folder or a list file")
    splits: dict[str, list[tuple[str, str]]] = {}    # split -> [(path, class)]
    if root.is_file():
        kind = "list"
        splits[root.name] = [(p, str(label)) for p, label in read_list(root, root.parent)]
    else:
        kind = "folder"
        subdirs = find_classes(root)
        split_names = [d for d in subdirs if d in ("train", "val", "test", "valid", "validation")]
        for split in split_names or [None]:
            base = root / split if split else root
            items = []
            for cls in find_classes(base):
                for dirpath, dirnames, files in os.walk(base / cls):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    items += [(os.path.join(dirpath, f), cls) for f in sorted(files) if not f.startswith(".")]
            splits[split or "."] = items
        if not any(splits.values()):
            raise UserError(f"'{root}' holds no class folders with files; expected root/<class>/<image> or "
                            "root/<split>/<class>/<image>")
    report = DataReport(str(root), kind, {})
    everything = [(split, p, c) for split, items in splits.items() for p, c in items]
    counts = {split: Counter() for split in splits}
    for split, items in splits.items():
        for cls in sorted({c for _, c in items}):
            counts[split][cls] = 0
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    loader = DataLoader(_Probe([p for _, p, _ in everything], min_size), batch_size=16, num_workers=workers,
                        collate_fn=_collate)
    with tqdm(total=len(everything), unit="img", disable=not progress, desc="check-data") as bar:
        for batch in loader:
            for i, status, info in batch:
                split, p, cls = everything[i]
                if status == "error":
                    report.problems.append((p, info))
                else:
                    counts[split][cls] += 1
                    for what in info:
                        report.notes[what] += 1
                        report.note_examples.setdefault(what, p)
            bar.update(len(batch))
    report.counts = {s: dict(sorted(c.items())) for s, c in counts.items()}
    for split, classes in report.counts.items():
        empty = [c for c, n in classes.items() if n == 0]
        if empty:
            report.warnings.append(f"{split}: class(es) with no readable image: {', '.join(empty[:10])}")
    if len(report.counts) > 1:
        names = list(report.counts)
        first = set(report.counts[names[0]])
        for other in names[1:]:
            missing = sorted(first - set(report.counts[other]))
            extra = sorted(set(report.counts[other]) - first)
            if missing:
                report.warnings.append(f"{other} lacks class(es) of {names[0]}: {', '.join(missing[:10])}")
            if extra:
                report.warnings.append(f"{other} has class(es) {names[0]} lacks: {', '.join(extra[:10])}")
    return report
