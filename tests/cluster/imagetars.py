"""The image tars that images.sh builds and node mode imports into every node's containerd."""

from __future__ import annotations

import os
from pathlib import Path

from .rundir import ClusterError

#: The images every node gets: the pause image and the Dockerfiles' base. Our own images (GBs for
#: the worker) are imported only where a test asks for them (ClusterSpec.image_tars).
BASE_IMAGE_TARS = ("registry.k8s.io_pause_3.10.tar", "docker.io_library_debian_bookworm-slim.tar")


def images_dir() -> Path:
    return Path(os.environ.get("NCRSH_CACHE", Path.home() / ".cache" / "ncrsh-swarm")) / "images"


def image_tars() -> list[Path]:
    """The base image tars that images.sh has built."""
    return [p for p in (images_dir() / name for name in BASE_IMAGE_TARS) if p.exists()]


#: Our images, as scripts/test.sh has images.sh build them from Dockerfile.worker / .operator.
OUR_IMAGE_TARS = (
    "docker.io_library_ncrsh-swarm-worker_0.1.0.tar",
    "docker.io_library_ncrsh-swarm-operator_0.1.0.tar",
)


def our_image_tars() -> tuple[Path, ...]:
    """The tars of our worker and operator images; ClusterError when images.sh has not built them."""
    tars = tuple(images_dir() / name for name in OUR_IMAGE_TARS)
    missing = [t.name for t in tars if not t.exists()]
    if missing:
        raise ClusterError(
            f"image tars missing in {images_dir()}: {', '.join(missing)} (run tests/cluster/images.sh "
            "with the Dockerfiles, as scripts/test.sh does)"
        )
    return tars
