"""OTAD-T: CIP at the ViT's dimension, CIP-net, DML-nets and the DML attack."""
from __future__ import annotations

import pytest
import torch
from support import needs_mnist

cip_reference = pytest.importorskip("otbench.defenses.otad.reference", reason="needs cvxpy and clarabel")


# A ViT of the quick preset's layout, smaller: 49 tokens x 16 dims = 784-dimensional x~, one block.
TINY_VIT = {"dim": 16, "depth": 1, "heads": 2, "epochs": 1, "batch_size": 64, "lr": 2e-3, "train_size": 2000}


TINY_CIPNET = {"cipnet_width": 32, "cipnet_depth": 1, "cipnet_heads": 2, "cipnet_epochs": 6, "cipnet_n_train": 1000,
               "cipnet_batch_size": 64}


TINY_DML = {"dml_arch": "cnn2", "dml_epochs": 1, "dml_batch_size": 64}


@pytest.fixture(scope="module")
def otad_t(mnist):
    from otbench.defense import create_defense

    return create_defense("otad-t", mnist, "quick", {"train": dict(TINY_VIT)})


@needs_mnist
def test_otad_t_cip_features_match_the_conic_reference_at_the_vit_dimension(otad_t, mnist):
    x = mnist.x_test[:3]
    with torch.no_grad():
        res, xt, idx = otad_t.cip_features(x)
        logits = otad_t.logits(x)
    assert xt.shape[1] == otad_t.net.tokens * otad_t.net.dim == 784
    cfg = otad_t.config["defense"]
    assert (cfg["delta1"], cfg["delta2"], cfg["K"], cfg["L"], cfg["l"]) == (1.0, 1.0, 10, 2.0, 0.0)  # paper V-E
    # the head reads the CIP feature: the defense's logits are H(g*)
    torch.testing.assert_close(logits, otad_t.net.classify(res.features.float()), rtol=1e-4, atol=1e-4)
    for b in range(len(x)):
        X, Z = otad_t.bank_x[idx[b]].double().numpy(), otad_t.bank_z[idx[b]].double().numpy()
        g, v, verdicts = cip_reference.solve_reference(
            xt[b].double().numpy(), X, Z, L=cfg["L"], l=cfg["l"], delta1=cfg["delta1"], delta2=cfg["delta2"],
            potentials=res.potentials[b].double().numpy())
        assert len(verdicts) - 1 == int(res.steps[b])  # Algorithm 2 relaxes as often as the reference LP
        g_ours = res.features[b].double().numpy()
        rel = ((g - g_ours) ** 2).sum() ** 0.5 / (g ** 2).sum() ** 0.5
        assert rel <= 1e-5, f"sample {b}: relative feature error {rel:.2e}"
        assert abs(v - float(res.value[b])) <= 1e-6 * max(1.0, abs(v))


@needs_mnist
@pytest.mark.slow
def test_cipnet_training_lowers_its_error_against_exact_solutions_on_held_out_points(mnist):
    from otbench.defense import create_defense
    from otbench.defenses.otad_t.cipnet import CIPNet

    nn_def = create_defense("otad-t-nn", mnist, "quick", {"train": {**TINY_VIT, **TINY_CIPNET}})
    xt, idx, exact = nn_def.held_out(150)  # test points: never in the CIP-net's training set
    K, d = idx.shape[1], xt.shape[1]
    cfg = nn_def.config["train"]
    torch.manual_seed(cfg["seed"])
    untrained = CIPNet(d, K, cfg["cipnet_width"], cfg["cipnet_depth"], cfg["cipnet_heads"])
    untrained.load_state_dict({k: v for k, v in nn_def.cipnet.state_dict().items() if k in ("sx", "sz")},
                              strict=False)
    before = nn_def.cipnet_error(untrained, xt, idx, exact)
    after = nn_def.cipnet_error(nn_def.cipnet, xt, idx, exact)
    assert after < 0.7 * before, f"held-out relative error {before:.4f} -> {after:.4f}"
    # differentiable end to end: a gradient attack gets a real, finite input gradient
    x = mnist.x_test[:4].clone().requires_grad_(True)
    nn_def.logits(x).logsumexp(1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_semihard_mining_picks_negatives_beyond_the_positive_within_the_margin():
    from otbench.defenses.otad_t.dml import semihard_negatives

    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(48, 8, generator=g), dim=1)
    labels = torch.randint(0, 4, (48,), generator=g)
    d, margin = torch.cdist(emb, emb), 0.3
    triples, semihard = semihard_negatives(d, labels, margin)
    a, p, n = triples.unbind(1)
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[n] != labels[a]).all()
    assert semihard.sum() > 10
    dap, dan = d[a, p], d[a, n]
    assert ((dan > dap) & (dan < dap + margin))[semihard].all()
    for t in range(len(a)):  # brute force: the closest negative beyond the positive, if any
        neg = (labels != labels[a[t]]) & (d[a[t]] > dap[t])
        if neg.any():
            assert dan[t] == d[a[t]][neg].min()
            assert bool(semihard[t]) == bool(d[a[t]][neg].min() < dap[t] + margin)


@needs_mnist
def test_dml_triplet_loss_falls_and_the_dml_attack_moves_otad_t_neighbours(mnist):
    from otbench.defense import build_config, create_defense
    from otbench.defenses.otad_t.dml import load_or_train_dml
    from otbench.defenses.otad_t.presets import dml_config
    from otbench.registry import ATTACKS, DEFENSES

    overrides = {"train": {**TINY_VIT, **TINY_DML}}
    history: list[float] = []
    cfg = dml_config(build_config(DEFENSES.get("otad-t-dml"), "quick", overrides)["train"])
    load_or_train_dml(mnist, cfg, torch.device("cpu"), progress=False, history=history)  # cached for the defense
    assert history, "the DML-net came from a cache: the test needs a fresh training"
    assert sum(history[-5:]) / 5 < 0.7 * sum(history[:5]) / 5, f"triplet loss {history[:5]} -> {history[-5:]}"

    defense = create_defense("otad-t-dml", mnist, "quick", overrides)
    assert defense.metric_network() is not None
    x, y = mnist.x_test[:10], mnist.y_test[:10]
    adv = ATTACKS.get("dml-attack")(defense, 2.0, steps=10).run(x, y, seed=0).adv
    assert ((adv - x).flatten(1).norm(dim=1) <= 2.0 + 1e-4).all()
    with torch.no_grad():
        before = defense.neighbours(x, defense.net.embed(x)).sort(1).values
        after = defense.neighbours(adv, defense.net.embed(adv)).sort(1).values
    changed = (before != after).any(1).float().mean()
    assert changed >= 0.8, f"only {changed:.0%} of the neighbour sets moved"


@needs_mnist
@pytest.mark.slow
def test_table_9_fill_times_the_three_solvers_on_tiny_models(mnist, tmp_path):
    """Table IX's fill end to end (the conic reference, the exact solver, CIP-net) on tiny models: the path
    `otbench report --fill --tables otad-table-9` takes, which once loaded its reference by a broken path."""
    from dataclasses import dataclass

    from otbench.papers.otad.otad_t import Row, TimingTable, timing_records
    from otbench.report.table import ReportContext
    from otbench.store import ResultStore

    exact = {"train": {**TINY_VIT, **TINY_DML}}
    nn_def = {"train": {**TINY_VIT, **TINY_DML, **TINY_CIPNET}}

    @dataclass(frozen=True)
    class TinyTiming(TimingTable):
        def rows_config(self):
            return (Row("OTAD-T", "otad-t-dml", "OTAD-T", exact), Row("OTAD-T-NN", "otad-t-nn-dml", "OTAD-T-NN", nn_def))

    table = TinyTiming("tiny-table-9", "Table IX, tiny", "otad", "IX", "mnist", conic_n=2)
    store = ResultStore(tmp_path / "r.sqlite")
    ctx = ReportContext(preset="quick", n=3, device="cpu", progress=False)
    table.fill(store, ctx)
    records = table.collect(store, ctx)
    conic = next(r for r in records if "conic" in r["method"])
    assert conic["n"] == 2 and conic["measured_mean_s"] > 0 and conic["feature_rel_error_vs_exact"] < 1e-4
    assert len(records) == 4 and all(r["n"] == 3 and r["measured_mean_s"] > 0 for r in records if r is not conic)
    assert timing_records(None)[0]["n"] == 0
    table.fill(store, ctx)  # nothing missing: nothing recomputed
    assert len(store.analyses()) == 1
    paths = table.render(store, tmp_path / "out", ctx)
    assert any(p.suffix == ".md" for p in paths)
    store.close()
