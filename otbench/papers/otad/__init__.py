"""OTAD (papers/otad.txt): its MNIST tables I-III and XII and the adaptive and worst-case tables that extend
them (mnist.py), the analyses of Tables IV, XIII, XIV and Fig. 2 (analyses.py), the regression Table V
(regression.py), OTAD-T's Tables VI-XII (otad_t.py) and `baselines-strongest` (strongest.py), beside the
published values in values.csv."""
from importlib.resources import files

from otbench.report.leaderboard import register_reference_attack
from otbench.report.paper import register_paper_values

register_paper_values("otad", files(__name__).joinpath("values.csv"))
# the leaderboard's "paper attack" column on MNIST under L2: Table III's Square (2000 queries, the authors' schedule)
register_reference_attack("mnist", "L2", "square", {}, "Square (OTAD Table III)")

from . import analyses, mnist, otad_t, regression, strongest  # noqa: E402,F401  (register the tables)
