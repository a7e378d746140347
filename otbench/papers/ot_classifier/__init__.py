"""The OT-Classifier (papers/ot-classifier.txt): Tables 1-3 and Figures 2-6 (tables.py, table_2.py), beside the
published values in values.csv."""
from importlib.resources import files

from otbench.report.leaderboard import register_reference_attack
from otbench.report.paper import register_paper_values

register_paper_values("ot-classifier", files(__name__).joinpath("values.csv"))

from . import table_2, tables  # noqa: E402,F401  (register the tables)

# the leaderboard's "paper attack" column under Linf: Table 1's PGD (40 steps) on each of its datasets
for _dataset in tables.TABLE1_EPS:
    register_reference_attack(_dataset, "Linf", "pgd", dict(tables.PGD_OVERRIDES), "PGD, 40 steps (OT-Classifier Table 1)")
