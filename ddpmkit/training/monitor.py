"""What a training run shows while it runs: metrics as JSON lines (and TensorBoard when it is
installed). Its preview grids of samples are drawn by :mod:`ddpmkit.viz` (re-exported here)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io.files import atomic_write
from ..viz import CLOUD_VIEWS, clouds_image, curves_image, image_grid, save_sample_grid, scatter_image

__all__ = ["MetricsLog", "save_sample_grid", "image_grid", "scatter_image", "curves_image", "clouds_image",
           "CLOUD_VIEWS"]


class MetricsLog:
    """Appends one JSON object per line to ``path``; mirrors scalars to TensorBoard if present.

    ``truncate_after(step)`` drops lines of later steps (a resumed run replays them).
    """

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    keep.append(line)
            except (ValueError, AttributeError):
                continue  # a line cut short by a kill
        atomic_write(self.path, lambda tmp: tmp.write_text("".join(f"{x}\n" for x in keep)))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
