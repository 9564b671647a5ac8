"""A laboratory's reviewed cells as training data: the cells of final (signed) specimens,
written as a class-folder tree by the reviewer's label, with a manifest.

    python -m model_training corrections --database URL --out DIR

``DIR/<class>/<accession>_<cell id>.png`` and ``DIR/manifest.csv`` (file, machine label,
final label, model version, accession, reviewer, signed at). The tree is one more site for
``train-sites --data lab=DIR`` (make its split once with ``split``). The images are the
150x150 crops the network saw (the cell at the centre, 1.5 x its box); the training
pipeline localises again on them. Cells the reviewer called ``unknown`` are left out.

Reads the tables the service's migrations define (plain SQL: the training package does
not import the service).
"""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import create_engine, text

from wbc_core.classes import CLASSES

QUERY = text(
    """
    SELECT c.id, c.label, c.machine_label, c.model_version, c.image_png,
           s.accession, s.finalised_by, s.finalised_at
    FROM cells c JOIN specimens s ON s.id = c.specimen_id
    WHERE s.status = 'final'
    ORDER BY s.id, c.id
    """
)
FIELDS = [
    "file",
    "machine_label",
    "final_label",
    "model_version",
    "accession",
    "reviewer",
    "signed_at",
]


def export_corrections(database_url: str, out: Path) -> dict[str, int]:
    """Write the tree and the manifest; returns the count of cells per class."""
    out = Path(out)
    counts = dict.fromkeys(CLASSES, 0)
    engine = create_engine(database_url)
    rows = []
    try:
        with engine.connect() as conn:
            for row in conn.execute(QUERY):
                if row.label not in CLASSES:
                    continue
                name = f"{row.label}/{row.accession}_{row.id}.png"
                (out / row.label).mkdir(parents=True, exist_ok=True)
                (out / name).write_bytes(bytes(row.image_png))
                counts[row.label] += 1
                rows.append(
                    [
                        name,
                        row.machine_label,
                        row.label,
                        row.model_version,
                        row.accession,
                        row.finalised_by,
                        str(row.finalised_at),
                    ]
                )
    finally:
        engine.dispose()
    out.mkdir(parents=True, exist_ok=True)
    with (out / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerows(rows)
    return counts
