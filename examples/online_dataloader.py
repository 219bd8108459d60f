"""Fresh fakes in a torch DataLoader: :class:`synth.OnlineFakes` renders sample ``i`` of a recipe
on the fly in the loader's workers (fork or spawn), nothing on disk, the default collate.

Run: .venv/bin/python examples/online_dataloader.py [--index faces.index] [--workers 2]
     [--start-method spawn] [--batches 2]
Without ``--index`` the pool is the embedded default face (scikit-image's astronaut) and its
mirror image.  Prints the shape of each batch and its labels.  Importable: the test suite
builds its loader with :func:`make_loader`.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils.data import DataLoader

from synth import OnlineFakes
from synth.pool import FacePool


def default_pool() -> FacePool:
    """Two faces without any files: the astronaut photo and its mirror image, landmarks detected."""
    from skimage import data

    from synth.face import get_detector

    a = data.astronaut()
    images = {"astronaut": a, "astronaut-mirrored": np.ascontiguousarray(a[:, ::-1])}
    landmarks = {}
    for key, image in images.items():
        found = get_detector().detect(image)
        if found is None:
            raise ValueError(f"{key}: no face found in the image")
        landmarks[key] = found.landmarks
    return FacePool.from_arrays(images, landmarks)


def make_loader(dataset: OnlineFakes, batch_size: int = 16, workers: int = 2,
                start_method: str | None = None) -> DataLoader:
    """A plain DataLoader over ``dataset`` (default collate).

    Parameters
    ----------
    dataset : OnlineFakes
        The online dataset.
    batch_size : int
        Items per batch.
    workers : int
        Loader processes (0: render in this process).
    start_method : {"fork", "spawn", "forkserver"}, optional
        How workers start; None = the platform's default.

    Returns
    -------
    DataLoader
        Batches of ``{"index": int64 (B,), "real", "fake": uint8 (B, S, S, 3), "mask": uint8
        (B, S, S), "plan": list of B JSON strings}``, the same whatever ``workers``.
    """
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      multiprocessing_context=start_method if workers > 0 else None,
                      persistent_workers=False)


def training_pairs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch as a detector trains on it: reals and fakes stacked (float NCHW in [0, 1]),
    labels (0 real, 1 fake) and masks (float N x 1 x S x S; all zero for the reals)."""
    images = torch.cat([batch["real"], batch["fake"]]).permute(0, 3, 1, 2).float() / 255
    n = len(batch["real"])
    labels = torch.cat([torch.zeros(n), torch.ones(n)])
    fake_masks = batch["mask"].unsqueeze(1).float() / 255
    masks = torch.cat([torch.zeros_like(fake_masks), fake_masks])
    return images, labels, masks


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", help="index written by `synth index` (default: the embedded face)")
    p.add_argument("--recipe", default="mixed")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--start-method", choices=("fork", "spawn", "forkserver"))
    p.add_argument("--batches", type=int, default=2)
    args = p.parse_args(argv)

    if args.index:
        from synth.index import load_index

        pool = load_index(args.index)
    else:
        pool = default_pool()
    dataset = OnlineFakes(pool, recipe=args.recipe, size=args.size, seed=0, length=args.batches * args.batch_size)
    for batch in make_loader(dataset, args.batch_size, args.workers, args.start_method):
        images, labels, masks = training_pairs(batch)
        print(f"items {batch['index'][0]}..{batch['index'][-1]}: images {tuple(images.shape)}, "
              f"labels {labels.tolist().count(1.0)} fake / {labels.tolist().count(0.0)} real, "
              f"masks {tuple(masks.shape)}")


if __name__ == "__main__":
    main()
