"""What the retrain-bump tests share (tests/retrain, tests/ci): the event, the stack, the versions."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

if TYPE_CHECKING:
    import pandas as pd

PAYLOAD = {
    "model_name": "breast-cancer",
    "release_id": "0123456789ab",
    "namespace": "mlops-dev",
    "stack": "dev",
    "fingerprint": "4f1c2a9e0b7d3c55",
    "starts_at": "2025-06-01T10:00:00Z",
    "features": ["mean radius", "worst area"],
    "summary": "PSI 0.31 on mean radius",
}
"""The retrain trigger's client_payload for the dev stack's model."""
NEWEST = "2025-06-10/data.parquet"
"""The newest of `write_versions`, relative to its folder: all 569 rows."""


def frame(rows: int) -> pd.DataFrame:
    """The first `rows` of scikit-learn's breast cancer data (569 in all), target included."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.head(rows)


def write_event(path: Path, action: str = "mlops-retrain", **payload: Any) -> Path:
    """A repository_dispatch event file, as GitHub Actions hands it over (GITHUB_EVENT_PATH)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    event = {"action": action, "client_payload": {**PAYLOAD, **payload}, "branch": "main"}
    path.write_text(json.dumps(event))
    return path


def enable_retrain(
    stack_file: Path, prefix: str, endpoint_url: str | None = None, enabled: bool = True
) -> None:
    """Turn `mlops:monitoring.retrain` on in a stack file, with dataset versions under `prefix`."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    document = yaml.load(stack_file.read_text())
    config = document["config"]
    monitoring = config.setdefault("mlops:monitoring", {})
    monitoring["retrain"] = {"enabled": enabled, "repository": "acme/mlops", "dataset_prefix": prefix}
    if endpoint_url is not None:
        config["mlops:artifacts"]["endpoint_url"] = endpoint_url
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    stack_file.write_text(buffer.getvalue())


def write_versions(folder: Path) -> Path:
    """Dataset versions in a folder, NEWEST (by name: 2025-06-10 after 2025-06-02) last."""
    folder.mkdir(parents=True)
    frame(300).to_csv(folder / "2025-06-01.csv", index=False)
    frame(400).to_csv(folder / "2025-06-02.csv", index=False)
    (folder / NEWEST).parent.mkdir()
    frame(569).to_parquet(folder / NEWEST, index=False)
    (folder / "_SUCCESS").write_text("")  # not a dataset file
    (folder / "README.md").write_text("versions by date")
    return folder
