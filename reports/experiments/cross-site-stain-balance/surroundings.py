"""How many images of each site have enough stained surroundings for the stain balance, and
their median optical density against the reference (the check quoted in README.md):
``python reports/experiments/cross-site-stain-balance/surroundings.py`` from the project root."""

import random
from pathlib import Path

import numpy as np

from wbc_core.preprocessing import STAIN_REFERENCE_OD, decode, measure

SITES = ("../shared/data/pbc", "../shared/data/kaggle-blood-cells/TEST")

for site in SITES:
    paths = sorted(Path(site).rglob("*.jp*g"))
    random.seed(0)
    paths = random.sample(paths, 80)
    ods = [measure(decode(p.read_bytes()), "stain")[2] for p in paths]
    found = np.stack([od for od in ods if od is not None])
    median = np.median(found, axis=0)
    print(
        f"{site}: {len(found)} of {len(ods)} balanced; median OD {median.round(3)}; "
        f"gains {(np.asarray(STAIN_REFERENCE_OD) / median).round(2)}"
    )
