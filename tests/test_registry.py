import sys
import textwrap

import pytest

from otbench.errors import OTBenchError
from otbench.registry import ATTACKS, DATASETS, DEFENSES, TABLES, Registry, unknown_name_message


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
