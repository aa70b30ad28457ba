"""Runs moto_server with one correction to its ECR model.

moto 5.2 derives an ECR image digest from the layer digests of a manifest (and gives
image indexes a random one), so index children and referrer subjects never match what a
real registry reports. Real ECR uses sha256 of the manifest bytes exactly as pushed;
this launcher replaces `Image._create_digest` with that, and nothing else.
The correction is asserted by tests/moto_digest.rs.
"""
import hashlib
import sys

import moto
from moto.ecr import models

EXPECTED_MOTO = "5.2."
if not moto.__version__.startswith(EXPECTED_MOTO):
    sys.exit(f"moto {moto.__version__} found; the digest correction is written for {EXPECTED_MOTO}x")


def _create_digest(self):
    self._image_digest = "sha256:" + hashlib.sha256(self.image_manifest.encode("utf-8")).hexdigest()


models.Image._create_digest = _create_digest

from moto.server import main  # noqa: E402

main(sys.argv[1:])
