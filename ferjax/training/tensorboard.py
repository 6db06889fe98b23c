"""TensorBoard event files without TensorFlow: scalars, images and hyperparameters.

The records are the ones TensorFlow's summary ops write (tensor summaries with the `scalars` and
`images` plugins' metadata, the HParams plugin's session summary) in TensorBoard's record
framing, written to a plain file (TensorBoard's own EventFileWriter would import TensorFlow for
its file system), so TensorBoard shows them as before. TensorBoard's protos import in ~0.3 s
where TensorFlow plus clu's writers took ~4 s of every run's start-up (bench/README.md).
"""

from __future__ import annotations

import io
import os
import socket
import time

import numpy as np


class EventWriter:
    """write_scalars / write_images / write_hparams / flush / close into `logdir`
    (a new events.out.tfevents.* file)."""

    def __init__(self, logdir: str):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(logdir, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.ferjax"
        self.path = os.path.join(logdir, name)
        self._file = RecordWriter(open(self.path, "wb"))  # noqa: SIM115 - closed in close()
        self._event = event_pb2.Event
        first = self._event(wall_time=now, file_version="brain.Event:2")
        self._file.write(first.SerializeToString())

    def _write(self, step: int, summary) -> None:
        event = self._event(wall_time=time.time(), step=int(step), summary=summary)
        self._file.write(event.SerializeToString())
        self._file.flush()

    def write_scalars(self, step: int, scalars: dict) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.scalar import metadata
        from tensorboard.util import tensor_util

        meta = metadata.create_summary_metadata(display_name=None, description=None)
        values = [
            summary_pb2.Summary.Value(
                tag=tag,
                metadata=meta,
                tensor=tensor_util.make_tensor_proto(np.float32(value)),
            )
            for tag, value in scalars.items()
        ]
        self._write(step, summary_pb2.Summary(value=values))

    def write_images(self, step: int, images: dict) -> None:
        """images: {tag: uint8[N, H, W, C]} (C = 1, 3 or 4), each as N PNGs."""
        from PIL import Image
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.image import metadata
        from tensorboard.util import tensor_util

        values = []
        for tag, batch in images.items():
            batch = np.asarray(batch, np.uint8)
            pngs = []
            for image in batch:
                buffer = io.BytesIO()
                Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
                    buffer, format="PNG"
                )
                pngs.append(buffer.getvalue())
            height, width = batch.shape[1:3]
            content = np.array([str(width).encode(), str(height).encode(), *pngs], dtype=object)
            meta = metadata.create_summary_metadata(
                display_name=None, description=None, converted_to_tensor=True
            )
            values.append(
                summary_pb2.Summary.Value(
                    tag=tag, metadata=meta, tensor=tensor_util.make_tensor_proto(content)
                )
            )
        self._write(step, summary_pb2.Summary(value=values))

    def write_hparams(self, hparams: dict) -> None:
        from tensorboard.plugins.hparams import summary_v2

        self._write(0, summary_v2.hparams_pb(hparams))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class NullWriter:
    """The writer of processes other than 0: TensorBoard files are process 0's."""

    def write_scalars(self, step: int, scalars: dict) -> None:
        pass

    def write_images(self, step: int, images: dict) -> None:
        pass

    def write_hparams(self, hparams: dict) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
