"""The run's TensorBoard events: scalars per iteration, the settings once, a few generated samples.

A thin layer over `tensorboardX.SummaryWriter`, which encodes the event protocol buffers without TensorFlow.
tensorboardX writes from a background thread; `close()` writes everything, and while the writer is open the thread
flushes every FLUSH_SECONDS, so a killed run loses at most that much of its events.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import tensorboardX

FLUSH_SECONDS = 1
SAMPLES_PER_STEP = 4  # images logged per iteration: enough to see what the agent makes, small event files


class SummaryWriter:
    """Writes `logdir/events.out.tfevents.<time>.<host>.<pid>.<id>` (a new file per writer, never truncating one)."""

    def __init__(self, logdir: str | os.PathLike):
        suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._writer = tensorboardX.SummaryWriter(str(logdir), filename_suffix=suffix,
                                                   flush_secs=FLUSH_SECONDS)
        self.path = next(Path(logdir).glob(f"events.out.tfevents.*{suffix}"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Logs every finite-or-infinite number in `values`; NaNs and non-numbers are dropped."""
        for tag, value in values.items():
            if isinstance(value, (int, float)) and value == value:
                self._writer.add_scalar(tag, float(value), int(step))

    def settings(self, config: dict) -> None:
        """Logs the run's settings once, as a markdown table under the tag `settings` (TensorBoard's Text tab)."""
        rows = "".join(f"| {_cell(key)} | {_cell(_format(value))} |\n" for key, value in config.items())
        self._writer.add_text("settings", "| setting | value |\n|---|---|\n" + rows, 0)

    def samples(self, step: int, images: np.ndarray, captions: list[str], answers: list[str] | None = None) -> None:
        """Logs the first SAMPLES_PER_STEP images as `samples/image_<i>` and one table `samples/captions`
        holding each image's caption and, when given, the VLM's answer."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"samples: images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
        if len(captions) != len(images) or (answers is not None and len(answers) != len(images)):
            raise ValueError(f"samples: {len(images)} images, {len(captions)} captions, "
                             f"{None if answers is None else len(answers)} answers")
        count = min(len(images), SAMPLES_PER_STEP)
        table = "| image | caption | answer |\n|---|---|---|\n"
        for i in range(count):
            self._writer.add_image(f"samples/image_{i}", images[i], int(step), dataformats="HWC")
            answer = "" if answers is None else answers[i]
            table += f"| {i} | {_cell(captions[i])} | {_cell(answer)} |\n"
        if count:
            self._writer.add_text("samples/captions", table, int(step))

    def close(self) -> None:
        self._writer.close()


def _format(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _cell(text: str) -> str:
    """Markdown table cell: a pipe or a newline would end the cell or the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def read_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """Reads back (step, tag, value) of every scalar in one event file, checking every record's CRC
    (a corrupt record raises ValueError). Needs `tensorboard` (the dev extra)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow

    reader = pywrap_tensorflow.PyRecordReader_New(str(path))
    out = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        except errors.DataLossError as error:
            raise ValueError(f"{path}: corrupt record ({error.message})") from error
        event = event_pb2.Event.FromString(reader.record())
        out.extend((event.step, v.tag, v.simple_value) for v in event.summary.value if v.HasField("simple_value"))
