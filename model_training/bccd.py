"""What is known of the BCCD smear fields behind the Kaggle images: their white-cell boxes
(the Pascal VOC annotations) and which field each Kaggle image was cut from (the table
``source_fields.csv.gz`` that ``model_training.source_fields`` makes)."""

from __future__ import annotations

import csv
import gzip
import xml.etree.ElementTree as ET
from pathlib import Path

Box = tuple[float, float, float, float]
TABLE = Path(__file__).with_name("source_fields.csv.gz")


def wbc_boxes(xml_path: Path) -> list[Box]:
    root = ET.parse(xml_path).getroot()
    boxes = []
    for obj in root.findall("object"):
        if obj.findtext("name") == "WBC":
            bb = obj.find("bndbox")
            assert bb is not None
            boxes.append(
                tuple(float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax"))
            )
    return boxes  # type: ignore[return-value]


def read_table(path: Path = TABLE) -> dict[tuple[str, str, str, int], str]:
    """(split, class, file name, file size) -> BCCD photograph; empty when the table is
    absent. The size keeps another tree's file of the same name from being taken for it."""
    if not path.exists():
        return {}
    with gzip.open(path, "rt", newline="") as fh:
        return {
            (r["split"], r["class"], r["file"], int(r["bytes"])): r["field"]
            for r in csv.DictReader(fh)
        }


def photograph_classes(split: str, path: Path = TABLE) -> dict[str, str]:
    """BCCD photograph -> class of the cell ``split``'s images were made from (one class per
    photograph, by construction of the table)."""
    return {field: cls for (s, cls, _, _), field in sorted(read_table(path).items()) if s == split}
