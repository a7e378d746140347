"""The OT-Classifier family: Algorithm 1's critic and codes, the intrinsic-dimension MLE, the STL-10 and Tiny
ImageNet loaders, and its report tables, on real MNIST (tiny models trained once per session)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from otbench.errors import OTBenchError

from support import needs_mnist

# Tiny stand-in for the quick preset: 8-16 channels, 2 epochs on 2000 real MNIST training points.
TINY_OTC = {"channels": [8, 16], "hidden": 64, "epochs": 2, "batch_size": 50, "train_size": 2000, "lr": 3e-3}


@pytest.fixture(scope="session")
def ot_cla(mnist):
    from otbench.defense import create_defense

    return create_defense("ot-cla", mnist, "quick", {"train": dict(TINY_OTC)})


@pytest.fixture(scope="session")
def e_cla(mnist):
    from otbench.defense import create_defense

    return create_defense("e-cla", mnist, "quick", {"train": dict(TINY_OTC)})


@pytest.fixture(scope="session")
def codes(mnist, ot_cla, e_cla):
    x = mnist.x_test[:1000]
    return ot_cla.embed(x), e_cla.embed(x)


# -- Algorithm 1 ------------------------------------------------------------------------------------------------
@needs_mnist
def test_critic_weights_stay_within_the_clip(ot_cla, e_cla):
    critic = ot_cla.net.critic
    clip = ot_cla.config["train"]["clip"]
    weights = torch.cat([p.detach().flatten() for p in critic.parameters()])
    assert weights.abs().max() <= clip + 1e-12
    assert (weights.abs() > 0.999 * clip).float().mean() > 0.01  # the clip binds: training pushed weights to it
    assert e_cla.net.critic is None  # E-CLA: the same encoder and classifier, no critic


@needs_mnist
def test_codes_have_the_table_3_dimension_and_classify(ot_cla, e_cla, codes, mnist):
    z_ot, z_e = codes
    assert z_ot.shape == z_e.shape == (1000, 4)  # Table 3: n_z = 4 on MNIST
    for d in (ot_cla, e_cla):
        assert d.train_record["test_accuracy"] > 0.7  # the code still carries the classes (chance: 0.1)


@needs_mnist
def test_ot_cla_codes_are_closer_to_the_gaussian_prior_than_e_cla(codes):
    from otbench.defenses.ot_classifier.analysis import gaussian_energy_distance

    z_ot, z_e = codes
    d_ot, d_e = gaussian_energy_distance(z_ot), gaussian_energy_distance(z_e)
    # a reference: two independent Gaussian samples of the same size are this close
    noise = gaussian_energy_distance(torch.randn(1000, 4, generator=torch.Generator().manual_seed(7)), seed=1)
    assert d_ot < d_e / 2, (d_ot, d_e)
    assert noise < d_ot  # the statistic resolves the difference: OT-CLA's codes are not exactly Gaussian either


def test_defenses_with_the_same_train_settings_never_share_stored_cells():
    from otbench.config import config_hash
    from otbench.defense import build_config
    from otbench.registry import DEFENSES

    names = ("ot-cla", "e-cla", "cnn-standard", "ot-cla-adv", "cnn-pgd-at")
    # the identity a cell is stored under (Defense.identity: the config's `defense` section replaces the name)
    idents = {config_hash({"defense": n, "dataset": "mnist", **build_config(DEFENSES.get(n), "quick", None)})
              for n in names}
    assert len(idents) == len(names)
    with pytest.raises(OTBenchError, match="defense.model"):
        DEFENSES.get("e-cla")(None, build_config(DEFENSES.get("e-cla"), "quick", {"defense": {"model": "ot-cla"}}),
                              torch.device("cpu"))


def test_energy_distance_is_zero_only_for_equal_samples():
    from otbench.defenses.ot_classifier.analysis import energy_distance

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 3, generator=gen), torch.randn(500, 3, generator=gen)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert energy_distance(a, b) < 0.05 < energy_distance(a, b + 0.5)


def test_adversarial_settings_follow_supplement_a():
    from otbench.defenses.ot_classifier.settings import resolve_adv, resolve_n_z
    from otbench.defense import build_config
    from otbench.registry import DEFENSES

    cfg = build_config(DEFENSES.get("ot-cla-adv"), "paper", None)["train"]
    assert resolve_adv("mnist", cfg)["adv_eps"] == 0.3 and resolve_adv("tiny-imagenet", cfg)["adv_eps"] == 0.01
    assert resolve_adv("mnist", {**cfg, "adv_eps": 0.25})["adv_eps"] == 0.25
    assert cfg["adv_steps"] * 0.01 == pytest.approx(cfg["adv_step_ratio"] * 0.3)  # Madry: 40 steps of 0.01
    assert [resolve_n_z(d, None) for d in ("mnist", "cifar10", "stl10", "tiny-imagenet")] == [4, 16, 16, 20]
    with pytest.raises(OTBenchError, match="digits"):
        resolve_adv("digits", cfg)


# -- intrinsic dimension ------------------------------------------------------------------------------------------
def _torus(k: int, n: int = 1000, ambient: int = 50, seed: int = 0) -> np.ndarray:
    """A flat k-torus (no boundary) embedded isometrically in R^ambient by a random rotation."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, 2 * np.pi, (n, k))
    q, _ = np.linalg.qr(rng.normal(size=(ambient, 2 * k)))
    return np.concatenate([np.cos(angles), np.sin(angles)], 1) @ q.T


def test_mle_finds_the_dimension_of_a_5_manifold_in_50_dimensions():
    from otbench.defenses.ot_classifier.intrinsic import mle_intrinsic_dimension

    assert mle_intrinsic_dimension(_torus(5)) == pytest.approx(5, abs=0.75)
    dims = [mle_intrinsic_dimension(_torus(k, seed=k)) for k in (2, 5, 8)]
    assert dims[0] < dims[1] < dims[2] and dims[0] == pytest.approx(2, abs=0.3)


def test_knn_distances_match_a_brute_force_reference():
    from scipy.spatial.distance import cdist

    from otbench.defenses.ot_classifier.intrinsic import knn_distances

    x = np.random.default_rng(1).normal(size=(200, 30))
    ref = np.sort(cdist(x, x), axis=1)[:, 1:13]  # drop the zero distance to itself
    assert np.allclose(knn_distances(x, 12), ref, atol=1e-9)


def test_mle_rejects_bad_settings():
    from otbench.defenses.ot_classifier.intrinsic import mle_intrinsic_dimension

    with pytest.raises(OTBenchError, match="levina"):
        mle_intrinsic_dimension(_torus(2), estimator="mle")
    with pytest.raises(OTBenchError, match="duplicate"):
        mle_intrinsic_dimension(np.zeros((50, 3)))


@needs_mnist
def test_table_3_estimates_mnist_near_the_paper(tmp_path, mnist):
    from otbench.data import resolve_data_root
    from otbench.registry import TABLES
    from otbench.store import ResultStore

    table = TABLES.get("otc-table-3")()
    store = ResultStore(tmp_path / "r.sqlite")
    args = argparse.Namespace(data_root=resolve_data_root(None), n=10, preset="quick")
    table.fill(store, args)  # other datasets are not on this machine: skipped, not an error
    paths = table.render(store, tmp_path, "quick")
    text = paths[1].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| MNIST"))
    measured = float(row.split("|")[3].split("/")[0])
    assert measured == pytest.approx(13, abs=1.5)  # the paper's MLE for MNIST
    assert "| CIFAR10 | 3 x 32 x 32 | not run / 17" in text
    store.close()


# -- loaders ------------------------------------------------------------------------------------------------------
def _write_stl10(root, n_train=4, n_test=3):
    rng = np.random.default_rng(0)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        np.asarray(rng.integers(1, 11, n), dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    return folder


def test_stl10_reads_torchvisions_binary_format(tmp_path):
    from torchvision import datasets

    from otbench.data import load_dataset

    _write_stl10(tmp_path)
    d = load_dataset("stl10", tmp_path)
    ref = datasets.STL10.__new__(datasets.STL10)  # torchvision's own reader, without its md5 check
    ref.root, ref.base_folder = str(tmp_path), "stl10_binary"
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        images, labels = ref._STL10__loadfile(f"{split}_X.bin", f"{split}_y.bin")
        assert torch.equal(x, torch.from_numpy(images).float() / 255.0)
        assert y.tolist() == labels.tolist() and 0 <= y.min() and y.max() <= 9
    assert d.x_train.shape == (4, 3, 96, 96) and d.num_classes == 10


def test_stl10_missing_or_broken_files_are_clear_errors(tmp_path):
    from otbench.data import load_dataset

    with pytest.raises(OTBenchError, match="stl10_binary"):
        load_dataset("stl10", tmp_path / "nowhere")
    folder = _write_stl10(tmp_path)
    np.zeros(5, dtype=np.uint8).tofile(folder / "test_y.bin")  # 5 labels for 3 images
    with pytest.raises(OTBenchError, match="3 labels"):
        load_dataset("stl10", tmp_path)


def _write_tiny_imagenet(folder, wnids=("n01443537", "n01629819"), per_class=2):
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (folder / "train" / w / "images").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                folder / "train" / w / "images" / f"{w}_{i}.JPEG")
    (folder / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate([wnids[1], wnids[0], wnids[1]]):
        mode = "L" if i == 2 else "RGB"  # a greyscale image, as the real data has
        arr = rng.integers(0, 256, (64, 64) if mode == "L" else (64, 64, 3), dtype=np.uint8)
        Image.fromarray(arr, mode).save(folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_reads_the_standard_layout(tmp_path):
    from PIL import Image

    from otbench.data import load_dataset

    folder = tmp_path / "tiny-imagenet-200"
    _write_tiny_imagenet(folder)
    d = load_dataset("tiny-imagenet", tmp_path)
    assert d.x_train.shape == (4, 3, 64, 64) and d.x_test.shape == (3, 3, 64, 64) and d.num_classes == 2
    assert d.y_train.tolist() == [0, 0, 1, 1] and d.y_test.tolist() == [1, 0, 1]  # wnids.txt order; val annotations
    with Image.open(folder / "val" / "images" / "val_2.JPEG") as im:
        ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(d.x_test[2], ref)  # greyscale converted to RGB, values as PIL reads them


def test_tiny_imagenet_from_the_environment_and_its_errors(tmp_path, monkeypatch):
    from otbench.data import load_dataset

    with pytest.raises(OTBenchError, match="wnids.txt"):
        load_dataset("tiny-imagenet", tmp_path / "empty")
    folder = tmp_path / "elsewhere"
    _write_tiny_imagenet(folder)
    monkeypatch.setenv("OTBENCH_TINY_IMAGENET", str(folder))
    assert load_dataset("tiny-imagenet", tmp_path / "env-root").num_classes == 2
    with open(folder / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(OTBenchError, match="n99999999"):
        load_dataset("tiny-imagenet", tmp_path / "env-root-2")


# -- report -------------------------------------------------------------------------------------------------------
@needs_mnist
def test_curve_figure_marks_unregistered_series_not_available(tmp_path, ot_cla, e_cla):
    from otbench.data import eval_subset
    from otbench.report.spec import Column, Row
    from otbench.papers.ot_classifier.tables import PGD_OVERRIDES, CurveFigure
    from otbench.runner import run_cell
    from otbench.store import ResultStore

    store = ResultStore(tmp_path / "r.sqlite")
    subset = eval_subset(len(ot_cla.data.x_test), 20, 0)
    over = {"steps": 10}
    for d in (ot_cla, e_cla):
        for eps in (0.0, 0.2):
            run_cell(d, "pgd", eps, subset, store, over, progress=False)
    tiny = {"train": dict(TINY_OTC)}
    spec = CurveFigure(name="f", title="t", paper="ot-classifier", paper_table="1", dataset="mnist",
                       rows=(Row("OT-CLA", "ot-cla", None, tiny), Row("E-CLA", "e-cla", None, tiny),
                             Row("RSE", "rse-not-registered")),
                       columns=tuple(Column(f"eps={e:g}", "pgd", e, "robust", None, over) for e in (0.0, 0.2)))
    paths = spec.render(store, tmp_path, "quick")
    md = next(p for p in paths if p.suffix == ".md").read_text()
    assert "| RSE | n/a / – | n/a / – | 0 |" in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    clean = float(rows["OT-CLA"].split("|")[2].split("/")[0])
    robust = float(rows["OT-CLA"].split("|")[3].split("/")[0])
    assert robust <= clean  # accuracy cannot rise with eps on the same samples
    assert any(p.suffix == ".png" and p.stat().st_size > 10_000 for p in paths)
    assert PGD_OVERRIDES == {"steps": 40}
    store.close()
