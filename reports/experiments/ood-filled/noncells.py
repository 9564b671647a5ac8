"""The test suite's generated non-cells posted to the service with each model folder given
(the highest version in it is served): how many are sent to review, answered `unknown`,
flagged out of distribution; rule 3 of this experiment.

    python reports/experiments/ood-filled/noncells.py MODEL_FOLDER [MODEL_FOLDER ...]
"""

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the test suite's images

from fastapi.testclient import TestClient  # noqa: E402

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from tests.app.test_lab import more_not_cells, not_cells  # noqa: E402


def main() -> None:
    images = {**not_cells(), **more_not_cells()}
    for folder in sys.argv[1:]:
        with TestClient(create_app(Settings(model_dir=Path(folder)))) as client:
            reviewed, unknown, ood = [], [], []
            for name, image in images.items():
                data = io.BytesIO()
                image.save(data, "PNG")
                body = client.post(
                    "/predict", files={"file": (f"{name}.png", data.getvalue(), "image/png")}
                ).json()
                version = body["model"]["version"]
                reviewed += [name] if body["needs_review"] else []
                unknown += [name] if body["label"] == "unknown" else []
                ood += [name] if "out_of_distribution" in body["review_reasons"] else []
        print(
            f"{folder} (version {version}): {len(images)} non-cells, sent to review "
            f"{len(reviewed)}, answered unknown {len(unknown)}, out of distribution "
            f"{len(ood)}; not sent to review: {sorted(set(images) - set(reviewed))}; "
            f"not unknown: {sorted(set(images) - set(unknown))}; out of distribution: "
            f"{sorted(ood)}"
        )


if __name__ == "__main__":
    main()
