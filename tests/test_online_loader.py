"""synth.OnlineFakes in a torch DataLoader with 2 workers (fork and spawn), the default collate,
through the importable example ``examples/online_dataloader.py``: the batches equal the items
rendered in this process, whichever the workers and their start method."""
import pickle

import numpy as np
import pytest

from synth import OnlineFakes

EXAMPLE = "examples/online_dataloader.py"
SIZE, LENGTH, BATCH = 64, 8, 4


@pytest.fixture(scope="module")
def example(load_script):
    return load_script(EXAMPLE)


@pytest.fixture(scope="module")
def dataset(example):
    return OnlineFakes(example.default_pool(), recipe="mixed", size=SIZE, seed=3, length=LENGTH)


@pytest.fixture(scope="module")
def expected(dataset):
    return [dataset[i] for i in range(LENGTH)]  # rendered here: fills this process's face cache


def test_dataset_pickles_without_its_face_cache(dataset, expected):
    assert dataset._cache is not None
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._cache is None
    item = copy[5]
    assert all(np.array_equal(item[k], expected[5][k]) for k in ("real", "fake", "mask"))
    assert item["index"] == 5 and item["plan"] == expected[5]["plan"]


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataloader_two_workers_default_collate(example, dataset, expected, start_method):
    batches = list(example.make_loader(dataset, batch_size=BATCH, workers=2, start_method=start_method))
    assert len(batches) == LENGTH // BATCH
    for b, batch in enumerate(batches):
        assert batch["fake"].shape == (BATCH, SIZE, SIZE, 3) and batch["mask"].shape == (BATCH, SIZE, SIZE)
        assert batch["index"].tolist() == list(range(b * BATCH, (b + 1) * BATCH))
        for j, i in enumerate(batch["index"].tolist()):
            for key in ("real", "fake", "mask"):
                assert np.array_equal(batch[key][j].numpy(), expected[i][key]), (start_method, i, key)
            assert batch["plan"][j] == expected[i]["plan"]
    images, labels, masks = example.training_pairs(batches[0])
    assert images.shape == (2 * BATCH, 3, SIZE, SIZE) and labels.tolist() == [0.0] * BATCH + [1.0] * BATCH
    assert masks.shape == (2 * BATCH, 1, SIZE, SIZE) and float(masks[:BATCH].max()) == 0.0
