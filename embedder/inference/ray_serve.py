"""Query embedding on Ray Serve (`app.embedder = "ray"`): replicas that each load the checkpoint once and
embed the queries of every web server in dynamic batches, scaled by Ray (a GPU each where there are GPUs).
`python manage.py serve-embedder` deploys it; the web app then sends each query's preprocessed pixels."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

log = logging.getLogger(__name__)

APP_NAME = "lookbook-embedder"


class EmbedQueries:
    """One replica: the network, and a dynamic batch of the queries that arrive together."""

    def __init__(self, checkpoint: str, sha256: str, runtime: str, precision: str, artifacts: str,
                 mirror_average: bool, max_batch: int, batch_wait_s: float) -> None:
        import torch

        from embedder.inference.network import load_checked_network

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.sha256 = sha256
        self.network, self.runtime = load_checked_network(Path(checkpoint), sha256, device, runtime, precision,
                                                          Path(artifacts), mirror_average)
        self.embed.set_max_batch_size(max_batch)
        self.embed.set_batch_wait_timeout_s(batch_wait_s)
        self.batch_sizes: list[int] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def embed(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        self.batch_sizes.append(len(pixels))
        return list(self.network(torch.from_numpy(np.stack(pixels))))

    async def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return await self.embed(pixels)

    def stats(self) -> dict[str, Any]:
        """The batches this replica ran, for tests and monitoring."""
        return {"runtime": self.runtime, "checkpoint_sha256": self.sha256, "batches": len(self.batch_sizes),
                "largest_batch": max(self.batch_sizes, default=0)}


def deploy_embedder(checkpoint: Path, sha256: str, *, runtime: str, precision: str, artifacts: Path,
                    mirror_average: bool, replicas: int = 1, max_replicas: int = 0, gpus: float = 0,
                    max_batch: int = 8, batch_wait_s: float = 0.01) -> Any:
    """Deploy the query embedder on the Ray cluster this process is connected to; returns its handle.
    ``max_replicas`` above ``replicas`` lets Ray Serve add replicas while queries queue."""
    options: dict[str, Any] = {"ray_actor_options": {"num_gpus": gpus, "num_cpus": 1},
                               "max_ongoing_requests": 4 * max_batch}
    if max_replicas > replicas:
        options["autoscaling_config"] = {"min_replicas": replicas, "max_replicas": max_replicas,
                                         "target_ongoing_requests": max_batch}
    else:
        options["num_replicas"] = replicas
    deployment = serve.deployment(EmbedQueries).options(**options)
    application = deployment.bind(str(Path(checkpoint).resolve()), sha256, runtime, precision,
                                  str(Path(artifacts).resolve()), mirror_average, max_batch, batch_wait_s)
    handle = serve.run(application, name=APP_NAME, route_prefix=None)
    log.info("deployed %s: %s replica(s)%s", APP_NAME, replicas,
             f", up to {max_replicas}" if max_replicas > replicas else "")
    return handle


def embedder_handle(address: str | None) -> Any:
    """The deployed query embedder's handle, connecting to the Ray cluster at ``address`` first if this
    process is not connected yet."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or "auto", include_dashboard=False, log_to_driver=False)
    return serve.get_app_handle(APP_NAME)
