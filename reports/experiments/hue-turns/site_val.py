"""PBC validation cells under other laboratories' looks (robustness.site_table), one model:

    python reports/experiments/hue-turns/site_val.py MODEL_DIR OUT.json
"""
import json
import sys
from pathlib import Path

from model_training.export import SavedModelRunner
from model_training.robustness import site_table
from model_training.sites import parse_sites
from wbc_core.ood import OodStats

model = Path(sys.argv[1])
site = parse_sites(["pbc=../shared/data/pbc"])[0]
t = site_table(SavedModelRunner(model), OodStats.load(model), site, "val")
json.dump(t, open(sys.argv[2], "w"), indent=1)
for k, v in t.items():
    print(k, {a: round(b, 3) for a, b in v.items()})
