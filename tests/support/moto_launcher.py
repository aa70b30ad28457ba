"""Runs moto_server with three corrections to its ECR model.

1. moto 5.2 derives an ECR image digest from the layer digests of a manifest (and gives
   image indexes a random one), so index children and referrer subjects never match
   what a real registry reports. Real ECR uses sha256 of the manifest bytes exactly as
   pushed; this launcher replaces `Image._create_digest` with that.
2. moto stamps `imagePushedAt` with the second of the PutImage call and never reports
   `lastRecordedPullTime`, so images pushed in one test all share a push second and were
   never pulled. Real ECR keeps both per image. The launcher adds one test endpoint,
   `POST /moto-api/afterpush/ecr-image-times` with a JSON body
   `{"repositoryName", "imageDigest", "imagePushedAt", "lastRecordedPullTime"}` (epoch
   seconds; a null pull time means never pulled), which sets both on the stored image;
   DescribeImages then reports them as ECR would.
3. moto's PutLifecyclePolicy validator knows the lifecycle policy schema before ECR's
   archive storage class: it refuses `transition` actions, `targetStorageClass`,
   `storageClass` and the `sinceImagePulled` / `sinceImageTransitioned` count types,
   which ECR accepts. The launcher widens its allowed values to ECR's.
The corrections are asserted by tests/moto_digest.rs.
"""
import hashlib
import json
import sys

import moto
from moto.ecr import models

EXPECTED_MOTO = "5.2."
if not moto.__version__.startswith(EXPECTED_MOTO):
    sys.exit(f"moto {moto.__version__} found; the digest correction is written for {EXPECTED_MOTO}x")


def _create_digest(self):
    self._image_digest = "sha256:" + hashlib.sha256(self.image_manifest.encode("utf-8")).hexdigest()


models.Image._create_digest = _create_digest


def afterpush_set_ecr_image_times(request, full_url, headers):
    body = json.loads(request.get_data() or b"{}")
    backend = models.ecr_backends[body.get("registryId", "123456789012")][body.get("region", "us-east-1")]
    repo = backend.repositories.get(body["repositoryName"])
    if repo is None:
        return 404, {}, "no repository " + body["repositoryName"]
    images = [i for i in repo.images if i.image_digest == body["imageDigest"]]
    if not images:
        return 404, {}, "no image " + body["imageDigest"]
    for image in images:
        image.image_pushed_at = body["imagePushedAt"]
        # The serializer reads ImageDetail.lastRecordedPullTime from this attribute.
        image.last_recorded_pull_time = body.get("lastRecordedPullTime")
    return 200, {}, ""


from moto.moto_api._internal import urls as moto_api_urls  # noqa: E402
from moto.ecr import policy_validation  # noqa: E402

# Module globals, read at validation time. VALID_ACTION_PROPERTIES is the same set object
# as REQUIRED_ACTION_PROPERTIES in moto, so it is replaced, not extended.
policy_validation.VALID_ACTION_PROPERTIES = {"type", "targetStorageClass"}
policy_validation.VALID_ACTION_TYPE_VALUES = {"expire", "transition"}
policy_validation.VALID_SELECTION_PROPERTIES = set(policy_validation.VALID_SELECTION_PROPERTIES) | {"storageClass"}
policy_validation.VALID_SELECTION_COUNT_TYPE_VALUES = {
    "imageCountMoreThan",
    "sinceImagePushed",
    "sinceImagePulled",
    "sinceImageTransitioned",
}

moto_api_urls.url_paths["{0}/moto-api/afterpush/ecr-image-times"] = afterpush_set_ecr_image_times

from moto.server import main  # noqa: E402

main(sys.argv[1:])
