"""The registries: names, closest-match errors, entry points, declarations checked at registration."""
from __future__ import annotations

import re
import sys
import textwrap

import pytest

from otbench.errors import OTBenchError
from otbench.registry import (
    ATTACKS,
    DATASETS,
    DEFENSES,
    TABLES,
    Registry,
    unknown_name_message,
)


def test_builtin_names_are_registered():
    assert {"otad", "standard", "knn"} <= set(DEFENSES.names())
    assert {"square", "pgd", "bpda-pgd", "none"} <= set(ATTACKS.names())
    assert {"mnist", "fashion-mnist", "digits"} <= set(DATASETS.names())
    assert {"otad-table-3", "otad-table-12"} <= set(TABLES.names())


def test_unknown_name_lists_valid_names_and_closest_match():
    with pytest.raises(OTBenchError) as err:
        DEFENSES.get("otda")
    msg = str(err.value)
    assert "unknown defense 'otda'" in msg and "Did you mean 'otad'?" in msg
    assert "standard" in msg and "\n" not in msg


def test_unknown_name_without_close_match_has_no_hint():
    assert "Did you mean" not in unknown_name_message("attack", "zzzzzz", ["square", "pgd"])


def test_duplicate_registration_is_refused():
    reg = Registry("thing")

    @reg.register("a")
    def first():
        return 1

    with pytest.raises(ValueError):
        reg.register("a")(lambda: 2)
    assert reg.create("a") == 1


def test_outside_package_adds_a_defense_through_an_entry_point(tmp_path, monkeypatch):
    """A real installed distribution (a dist-info folder on sys.path) declares the entry point."""
    pkg = tmp_path / "my_defense_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from otbench.defense import Defense
        from otbench.registry import register_defense

        @register_defense("plugin-identity")
        class PluginDefense(Defense):
            description = "test plug-in"
            presets = {"quick": {"defense": {}}}
            def logits(self, x):
                return x.flatten(1)[:, :10]
    """))
    info = tmp_path / "my_defense_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-defense-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[otbench.defenses]\nplugin = my_defense_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("defense")  # a fresh registry, loading built-ins and entry points from scratch
    monkeypatch.setattr("otbench.registry.DEFENSES", reg)
    monkeypatch.setattr(sys.modules["otbench.registry"], "register_defense", reg.register)
    sys.modules.pop("my_defense_pkg", None)
    assert "plugin-identity" in reg.names()
    assert reg.get("plugin-identity").description == "test plug-in"


def test_no_two_registered_defenses_share_a_stored_identity():
    """Cells are keyed by the defense's identity: two defenses with the same one would share results."""
    from otbench.config import config_hash
    from otbench.defense import build_config, defense_identity
    from otbench.registry import DEFENSES

    seen: dict[str, str] = {}
    for name in DEFENSES.names():
        cls = DEFENSES.get(name)
        for preset in cls.presets:
            key = config_hash(defense_identity(name, "mnist", build_config(cls, preset, None)), 24)
            assert key not in seen, f"defenses '{name}' and '{seen[key]}' share the identity of preset '{preset}'"
            seen[key] = f"{name}"


def test_temporary_registration_is_undone_and_the_original_keeps_its_name():
    from otbench.attacks.pgd import PGD

    class Other(PGD):
        pass

    with ATTACKS.temporary("pgd", Other):
        assert ATTACKS.get("pgd") is Other and Other.name == "pgd"
    assert ATTACKS.get("pgd") is PGD and PGD.name == "pgd"
    with ATTACKS.temporary("brand-new", Other):
        assert "brand-new" in ATTACKS
    assert "brand-new" not in ATTACKS


@pytest.mark.parametrize("attrs,problem", [
    ({"surrogate_description": "the net"}, "declares surrogate_description without implementing surrogate()"),
    ({"surrogate": lambda self: None}, "implements surrogate() without declaring surrogate_description"),
    ({"differentiable": False, "piecewise_differentiable": True}, "without implementing exact_module()"),
    ({"has_metric_network": True}, "declares has_metric_network without implementing metric_network()"),
    ({"surrogate_outputs_defense": True}, "surrogate_outputs_defense needs a surrogate"),
    ({"presets": {}}, "declares no presets"),
    ({"presets": {"quick": {"attack": {}}}}, "preset 'quick' must map sections among train, defense"),
    ({"logits": None}, "does not implement logits()"),
    ({"randomized": "yes"}, "randomized must be True or False"),
    ({"task": "ranking"}, "task 'ranking' is not one of classification, regression"),
    ({"known_gaps": {"paper": "a preset it does not have"}}, "known_gaps must map its presets (quick) to text, got 'paper'"),
    ({"known_gaps": {"quick": 3}}, "known_gaps must map its presets (quick) to text, got 'quick'"),
])
def test_a_defense_whose_declarations_contradict_its_methods_is_refused(attrs, problem):
    from otbench.defense import Defense

    body = {"presets": {"quick": {"defense": {}}}, "logits": lambda self, x: x, **attrs}
    if body["logits"] is None:
        del body["logits"]
    reg = Registry("defense")
    with pytest.raises(OTBenchError, match=re.escape(problem)) as err:
        reg.register("contradicting")(type("Contradicting", (Defense,), body))
    assert "\n" not in str(err.value) and "defense 'contradicting'" in str(err.value)
    assert "contradicting" not in reg._entries  # refused, not half-registered


def test_every_registered_defense_passes_its_own_declaration_check():
    for name in DEFENSES.names():
        DEFENSES.get(name).check_declarations()
