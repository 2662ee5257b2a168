"""KServe's Python model server on a scikit-learn pipeline: the benchmark's KServe peer.

Runs inside the peer's own environment (.tools/bench-peers/kserve), never in ours. The model
does what KServe's sklearnserver does (load model.joblib; `get_predict_input`, the estimator's
`predict`, `get_predict_response`); KServe publishes that server as an image, not on PyPI, so
the same few lines stand in for it on KServe's ModelServer.
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import kserve
from kserve import Model, ModelServer
from kserve.utils.utils import get_predict_input, get_predict_response


class SklearnModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.model: Any = None

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return True

    def predict(self, payload: Any, headers: Any = None) -> Any:
        instances = get_predict_input(payload)
        return get_predict_response(payload, self.model.predict(instances), self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = SklearnModel(args.model_name, args.model_path)
    model.load()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers).start([model])
