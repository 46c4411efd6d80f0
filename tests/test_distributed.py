"""Scoring on a Dask LocalCluster, the scores file, and streaming selection, against the in-memory path."""
import os
from pathlib import Path

import numpy as np
import pytest

from focal_al.datasets import make_synthetic
from focal_al.distributed import (
    connect,
    load_safetensors_weights,
    save_safetensors_weights,
    score_pool_distributed,
)
from focal_al.estimator import SegmentationNet
from focal_al.registry import get_strategy
from focal_al.scores import PoolScores
from focal_al.scores_file import ScoresFile, write_scores
from focal_al.selection import fit_centres, kmeans
from focal_al.store import PatchStore
from focal_al.streaming import CandidateRows, stream_kmeans, streaming_focannot


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data = make_synthetic(3, size=(64, 96), seed=0)
    path = tmp_path_factory.mktemp("pool") / "pool.h5"
    return PatchStore.from_dataset(path, data, patch_size=16, overlap=0.0)


@pytest.fixture(scope="module")
def net(store):
    net = SegmentationNet(module__width=2, module__depth=2, batch_size=8, max_epochs=1, random_state=0)
    return net.fit(store.patches[:40], (store.labels[:40] > 0).astype(np.int64))


@pytest.fixture(scope="module")
def client():
    # connect(None) is score_pool_distributed's embedded default: a LocalCluster of worker processes.
    with connect(None, n_workers=2, threads_per_worker=1) as client:
        yield client


def test_same_scores_and_selection_as_single_process(tmp_path, store, net, client):
    # 72 patches in tasks of 16 (two batches of 8): five tasks over the two workers.
    out = score_pool_distributed(net, store, tmp_path / "round1.h5", client=client, chunk_size=20)
    reference = net.score_pool(store.patches)
    assert isinstance(out, ScoresFile) and out.n_patches == len(store) == 72
    for name in ("entropy", "margin", "least_confidence", "descriptors"):
        np.testing.assert_allclose(getattr(out, name), getattr(reference, name), rtol=1e-6, atol=1e-7)
    focannot = get_strategy("focannot")
    pool = np.arange(len(store))
    picked = focannot(out.pool_scores(), 10, pool, np.random.default_rng(0), k=3)
    expected = focannot(reference, 10, pool, np.random.default_rng(0), k=3)
    np.testing.assert_array_equal(picked, expected)
    assert (tmp_path / "round1.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round1.h5", "round1.safetensors"]


def test_store_by_path_and_existing_file(tmp_path, store, net, client):
    path = tmp_path / "s.h5"
    out = score_pool_distributed(net, store.path, path, client=client, chunk_size=1000)
    np.testing.assert_allclose(out.entropy, net.score_pool(store.patches).entropy, rtol=1e-6)
    with pytest.raises(FileExistsError, match="s.h5' already exists"):
        score_pool_distributed(net, store, path, client=client)


def test_worker_failure_leaves_nothing(tmp_path, store, net, client, monkeypatch):
    # A weights file the workers cannot use (wrong architecture) fails every task.
    from focal_al import distributed

    other = SegmentationNet(module__width=4, module__depth=2, batch_size=8).initialize()
    bad = tmp_path / "w.safetensors"
    save_safetensors_weights(other, bad)
    monkeypatch.setattr(distributed, "save_safetensors_weights", lambda net, path: os.replace(bad, path))
    with pytest.raises(ValueError, match="does not fit the network"):
        score_pool_distributed(net, store, tmp_path / "r.h5", client=client)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no weights file left to block a rerun


def test_safetensors_round_trip_and_damage(tmp_path, net):
    path = tmp_path / "w.safetensors"
    save_safetensors_weights(net, path)
    fresh = load_safetensors_weights(SegmentationNet(module__width=2, module__depth=2, batch_size=8), path)
    x = np.zeros((2, 3, 16, 16), np.uint8)
    np.testing.assert_array_equal(fresh.predict_proba(x), net.predict_proba(x))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="w.safetensors' is damaged"):
        load_safetensors_weights(SegmentationNet(module__width=2, module__depth=2), path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_safetensors_weights(SegmentationNet(module__width=2, module__depth=2), tmp_path / "missing.safetensors")


def test_connect_rejects_bad_client():
    with pytest.raises(TypeError, match="'client' parameter"):
        with connect(3):
            pass


def blobs(n, d=16, seed=0):
    """Well-separated clusters of float32 descriptors and random entropies."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (3, d)).astype(np.float32)
    which = rng.integers(0, 3, n)
    x = (centres[which] + rng.normal(0, 1, (n, d))).astype(np.float32)
    # Different spreads per cluster give CU distinct values, so the quotas are not ties.
    x *= np.array([1.0, 1.5, 2.0], dtype=np.float32)[which, None]
    entropy = rng.random(n).astype(np.float32)
    return PoolScores(entropy=entropy, margin=1 - entropy, least_confidence=entropy / 2, descriptors=x)


def test_scores_file_round_trip_and_blocks(tmp_path):
    scores = blobs(1000)
    f = write_scores(tmp_path / "s.h5", scores, attrs={"note": "x"})
    np.testing.assert_array_equal(f.descriptors, scores.descriptors)
    np.testing.assert_array_equal(f.read("descriptors", 990, 2000), scores.descriptors[990:])
    assert f.attrs["note"] == "x"
    cand = np.array([3, 4, 10, 999])
    np.testing.assert_array_equal(CandidateRows(f, cand)[1:3], scores.descriptors[[4, 10]])
    np.testing.assert_array_equal(CandidateRows(f, cand).take([3, 0]), scores.descriptors[[999, 3]])
    scattered = np.array([999, 3, 500, 4, 0, 998])
    np.testing.assert_array_equal(f.read_rows("descriptors", scattered, max_gap=2), scores.descriptors[scattered])
    np.testing.assert_array_equal(f.read_rows("entropy", scattered), scores.entropy[scattered])
    (tmp_path / "bad.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.h5' is not an HDF5 file"):
        ScoresFile(tmp_path / "bad.h5")


def test_streaming_equals_in_memory_given_centroids(tmp_path):
    rng = np.random.default_rng(1)
    scores = PoolScores(entropy=rng.random(3000).astype(np.float32), margin=np.zeros(3000, np.float32),
                        least_confidence=np.zeros(3000, np.float32),
                        descriptors=rng.normal(size=(3000, 8)).astype(np.float32))
    f = write_scores(tmp_path / "s.h5", scores)
    candidates = np.setdiff1d(np.arange(3000), rng.choice(3000, 300, replace=False))
    centroids = fit_centres(scores.descriptors[candidates], 4, rng=np.random.default_rng(0))
    expected = get_strategy("focannot")(scores, 75, candidates, np.random.default_rng(0), k=4)
    picked = streaming_focannot(f, 75, candidates=candidates, k=4, centroids=centroids, chunk_size=500,
                                random_state=0)
    np.testing.assert_array_equal(picked, expected)


@pytest.mark.parametrize("k", [1, 3])
def test_streaming_equals_in_memory_on_clear_clusters(tmp_path, k):
    scores = blobs(5000)
    f = write_scores(tmp_path / "s.h5", scores)
    candidates = np.arange(100, 5000)
    expected = get_strategy("focannot")(scores, 100, candidates, np.random.default_rng(0), k=k)
    picked = streaming_focannot(f, 100, candidates=candidates, k=k, chunk_size=700, random_state=0)
    np.testing.assert_array_equal(np.sort(picked), np.sort(expected))
    assert len(np.unique(picked)) == 100 and picked.min() >= 100


def test_stream_kmeans_finds_the_blobs(tmp_path):
    scores = blobs(4000)
    f = write_scores(tmp_path / "s.h5", scores)
    centroids = stream_kmeans(CandidateRows(f, np.arange(4000)), 3, rng=np.random.default_rng(0), chunk_size=512)
    _, reference = kmeans(scores.descriptors, 3, rng=np.random.default_rng(0))
    dist = ((centroids[:, None] - reference[None]) ** 2).sum(-1)
    assert np.all(dist.min(axis=1) < 0.5)


def test_streaming_errors(tmp_path):
    f = write_scores(tmp_path / "s.h5", blobs(100))
    with pytest.raises(ValueError, match=r"'candidates' parameter must hold pool indices in \[0, 100\)"):
        streaming_focannot(f, 5, candidates=[0, 100])
    with pytest.raises(ValueError, match="'centroids' parameter must have shape"):
        streaming_focannot(f, 5, centroids=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"'n_instances' parameter must be in \[1, 100\]"):
        streaming_focannot(f, 101)
    with pytest.raises(ValueError, match="'chunk_size' parameter of streaming_focannot must be an int >= 1. Got 0"):
        streaming_focannot(f, 5, chunk_size=0)


def test_cli_score_on_a_scheduler_address(tmp_path, store, net, client):
    from click.testing import CliRunner

    from focal_al.cli import main

    weights = tmp_path / "w.safetensors"
    save_safetensors_weights(net, weights)
    # The first image labelled, the others not: --query picks among the unlabelled patches only.
    data = make_synthetic(3, size=(64, 96), seed=0)
    masks = [m if k == 0 else np.full(m.shape, 255, np.uint8) for k, m in enumerate(data.masks)]
    partial = PatchStore.build(tmp_path / "partial.h5", data.images, [(m > 0).astype(np.uint8) if k == 0 else m
                                                                       for k, m in enumerate(masks)],
                               data.names, patch_size=16, overlap=0.0)
    out = tmp_path / "scores.h5"
    result = CliRunner().invoke(main, [
        "score", str(partial.path), str(weights), "--out", str(out), "--scheduler", client.scheduler.address,
        "--width", "2", "--depth", "2", "--batch-size", "8", "--query", "5",
    ])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "index,image,y_level0,x_level0,side_level0" and len(lines) == 6
    assert all(line.split(",")[1] != data.names[0] for line in lines[1:])  # never a labelled patch
    np.testing.assert_allclose(ScoresFile(out).entropy, net.score_pool(partial.patches, batch_size=8).entropy,
                               rtol=1e-6)
    labelled = CliRunner().invoke(main, [
        "score", str(store.path), str(weights), "--out", str(tmp_path / "all.h5"), "--scheduler",
        client.scheduler.address, "--width", "2", "--depth", "2", "--query", "5"])
    assert labelled.exit_code != 0 and "unlabelled" in labelled.output


def test_streaming_caps_k_at_the_candidates_like_the_in_memory_strategy(tmp_path):
    f = write_scores(tmp_path / "s.h5", blobs(50))
    picked = streaming_focannot(f, 2, candidates=[3, 7, 9], k=5, random_state=0)
    assert len(set(picked.tolist())) == 2 and set(picked.tolist()) <= {3, 7, 9}


def test_score_refuses_to_write_over_its_inputs(tmp_path, store, net):
    from click.testing import CliRunner

    from focal_al.cli import main

    weights = tmp_path / "w.safetensors"
    save_safetensors_weights(net, weights)
    before = {p: p.read_bytes() for p in (weights, Path(store.path))}
    for out in (store.path, tmp_path / "w.h5"):  # the store itself; a name whose weights copy is the input
        result = CliRunner().invoke(main, ["score", str(store.path), str(weights), "--out", str(out), "--overwrite",
                                           "--width", "2", "--depth", "2"])
        assert result.exit_code != 0 and "must not name the input" in result.output
    assert all(p.read_bytes() == data for p, data in before.items())
    with pytest.raises(ValueError, match="would replace the input PatchStore"):
        score_pool_distributed(net, store, store.path, overwrite=True)
