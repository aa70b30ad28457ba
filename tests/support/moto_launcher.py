"""Runs moto_server with corrections to its ECR, ECS and Lambda models.

1. ECR digests. moto 5.2 derives an ECR image digest from the layer digests of a
   manifest (and gives image indexes a random one), so index children and referrer
   subjects never match what a real registry reports. Real ECR uses sha256 of the
   manifest bytes exactly as pushed; `Image._create_digest` is replaced with that.
2. ECR push and pull times. moto stamps `imagePushedAt` with the second of the PutImage
   call and never reports `lastRecordedPullTime`, so images pushed in one test all share
   a push second and were never pulled. Real ECR keeps both per image. The launcher adds
   one test endpoint, `POST /moto-api/afterpush/ecr-image-times` with a JSON body
   `{"repositoryName", "imageDigest", "imagePushedAt", "lastRecordedPullTime"}` (epoch
   seconds; a null pull time means never pulled), which sets both on the stored image;
   DescribeImages then reports them as ECR would.
3. ECR lifecycle policy schema. moto's PutLifecyclePolicy validator knows the schema
   before ECR's archive storage class: it refuses `transition` actions,
   `targetStorageClass`, `storageClass` and the `sinceImagePulled` /
   `sinceImageTransitioned` count types, which ECR accepts. The launcher widens its
   allowed values to ECR's.
   Corrections 1 to 3 are asserted by tests/it/moto_digest.rs.
4. ECS task containers. moto gives a task one container (its definition's first) and
   no `imageDigest`; real ECS reports every container, each with the digest it pulled,
   which stays what the task runs after its tag moves. Tasks get one container per
   container definition, and images of this moto's own ECR get the digest their tag
   names when the task starts.
5. Lambda image functions. `PublishVersion` shares the `Code` of `$LATEST` with the new
   version, so updating the function's code rewrites the `ImageUri` of every published
   version; real versions are immutable. And `Code.ResolvedImageUri` is malformed for an
   `ImageUri` given by digest (`repo@sha256@sha256:…`); real Lambda reports
   `repo@sha256:<digest>`. Published versions get their own copy of the code, and the
   resolved URI is the repository plus the digest.
6. ECR tag moves. When PutImage moves a tag of a mutable repository onto a new
   manifest, moto deletes the image that carried it if that was its only tag; real ECR
   keeps it, untagged (what lifecycle rules on untagged images are for). The tag is
   taken off the older image before the push, which then keeps it.
   Corrections 4 to 6 are asserted by tests/it/moto_in_use.rs.
7. ECR authorization token expiry. moto's GetAuthorizationToken reports every token
   as expiring on 2015-01-01, so a client that caches tokens until shortly before
   `expiresAt` (as it should) can never reuse one. Real ECR tokens are valid for 12
   hours from issue; the launcher reports that. Asserted by tests/it/moto_digest.rs.
8. Inspector coverage. moto has no ListCoverage. The launcher serves it as the
   Inspector API reference describes it: `POST /coverage/list` with `filterCriteria`
   (`resourceType`, `accountId`, `ecrRepositoryName`; EQUALS or NOT_EQUALS; any other
   criterion is refused rather than ignored), `maxResults` (1 to 200) and `nextToken`,
   answering `coveredResources[]` with `resourceId`
   (`arn:aws:ecr:<region>:<account>:repository/<name>/<digest>`), `resourceType`
   `AWS_ECR_CONTAINER_IMAGE`, `accountId`, `scanType`, `scanStatus` and
   `resourceMetadata.ecrRepository` / `.ecrImage` (`tags`, `inUseCount`, `lastInUseAt`,
   `imagePulledAt`). The coverage is seeded through one test endpoint,
   `POST /moto-api/afterpush/inspector-coverage` with `{"accountId", "region",
   "images": [{"repositoryName", "imageDigest", "imageTags", "inUseCount",
   "lastInUseAt"}]}` (times in epoch seconds), which replaces the account's coverage.
9. Inspector account status. moto's BatchGetAccountStatus fails without `accountIds`
   and leaves out an account that never enabled Inspector; real Inspector answers for
   the caller's account, with every resource type `DISABLED` until enabled.
   Corrections 8 and 9 are asserted by tests/it/moto_inspector.rs.
10. STS AssumeRole. moto hands out credentials for any role ARN, existing or not; real
   STS refuses a role that does not exist (or does not trust the caller) with 403
   `AccessDenied` ("... is not authorized to perform: sts:AssumeRole on resource: ...").
   The launcher refuses, the same way, a role that the target account's IAM does not
   hold, and a role whose trust policy requires an `sts:ExternalId` (a `StringEquals`
   condition, as infra/in-use-reader.yaml writes it) that the request does not carry
   (the rest of a trust policy is not evaluated). Asserted by tests/it/moto_in_use.rs.
11. Lambda images from another account's registry. moto resolves a function's `ImageUri`
   in the function's own account and region, whatever registry the URI names, so a
   function in a consumer account cannot be created from the central registry's image.
   Real Lambda pulls from the registry the URI names (when its policy allows). The
   launcher resolves the URI in the account and region of its host. Asserted by
   tests/it/moto_in_use.rs.
12. ECR registry policy scope. moto's PutRegistryPolicy accepts only the actions of the
   V1 scope (`ecr:CreateRepository`, `ecr:ReplicateImage`); registries are created with
   the V2 scope, where a registry policy may grant every ECR action (`ecr:BatchGetImage`
   included). The launcher accepts any `ecr:` action. Asserted by tests/it/moto_in_use.rs.
13. SQS FIFO deduplication after a delete. moto drops a message whose
   `MessageDeduplicationId` matches one still in the queue, so once the first was
   received and deleted (or moved to a dead-letter queue) a copy sent within the five
   minutes is delivered. Real SQS remembers the id for its five-minute deduplication
   interval whatever became of the message, accepts the copy and does not deliver it.
   The launcher remembers every id sent to a FIFO queue for those five minutes; a move
   to the dead-letter queue is not a send and is not deduplicated. Asserted by
   tests/it/reconcile_queue.rs.
"""
import copy
import datetime
import hashlib
import json
import re
import sys

import moto
from moto.awslambda import models as lambda_models
from moto.ecr import models
from moto.ecr import responses as ecr_responses
from moto.ecs import models as ecs_models

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


_put_image = models.ECRBackend.put_image


def _put_image_keeping_untagged(
    self, repository_name, image_manifest, image_tag, image_manifest_mediatype=None, digest=None
):
    repository = self.repositories.get(repository_name)
    if (
        repository is not None
        and image_tag is not None
        and repository.image_tag_mutability == "MUTABLE"
        and not repository.image_tag_mutability_exclusion_filters
    ):
        for image in repository.images:
            if image_tag in image.image_tags and image.image_manifest != image_manifest:
                image.remove_tag(image_tag)
                if not image.image_tags:
                    image.image_tag = None
    return _put_image(
        self, repository_name, image_manifest, image_tag, image_manifest_mediatype, digest
    )


models.ECRBackend.put_image = _put_image_keeping_untagged

ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/(.+)$")


def _pulled_digest(account_id, region, image):
    """The digest a pull of `image` gets from this moto's ECR, or None."""
    m = ECR_IMAGE.match(image or "")
    if not m or m.group(1) != account_id or m.group(2) != region:
        return None
    rest = m.group(3)
    if "@" in rest:
        return rest.split("@", 1)[1]
    repo, tag = rest, "latest"
    if ":" in rest.rsplit("/", 1)[-1]:
        repo, tag = rest.rsplit(":", 1)
    try:
        found = models.ecr_backends[account_id][region].batch_get_image(
            repository_name=repo, image_ids=[{"imageTag": tag}]
        )["images"]
    except Exception:
        return None
    return found[0].get_image_digest() if found else None


_task_init = ecs_models.Task.__init__


def _task_init_every_container(self, cluster, task_definition, *args, **kwargs):
    _task_init(self, cluster, task_definition, *args, **kwargs)
    containers = []
    for definition in task_definition.container_definitions:
        c = ecs_models.Container(task_definition)
        c.name = definition.get("name")
        c.image = definition.get("image")
        c.cpu = definition.get("cpu", 0)
        c.memory = definition.get("memory")
        c.environment = definition.get("environment")
        c.command = definition.get("command")
        digest = _pulled_digest(self._account_id, self.region_name, c.image)
        if digest:
            c.image_digest = digest
        containers.append(c)
    self.containers = containers


ecs_models.Task.__init__ = _task_init_every_container

_publish_version = lambda_models.LambdaStorage.publish_version


def _publish_immutable_version(self, name_or_arn, description=""):
    fn = _publish_version(self, name_or_arn, description)
    if fn is not None:
        latest = self._functions[fn.function_name]["latest"]
        if fn is not latest and fn.code is latest.code:
            fn.code = copy.deepcopy(latest.code)
    return fn


lambda_models.LambdaStorage.publish_version = _publish_immutable_version

_get_code = lambda_models.LambdaFunction.get_code


def _get_code_resolved(self):
    resp = _get_code(self)
    uri = resp.get("Code", {}).get("ImageUri")
    if uri:
        repository = uri.split("@", 1)[0]
        if ":" in repository.rsplit("/", 1)[-1]:
            repository = repository.rsplit(":", 1)[0]
        resp["Code"]["ResolvedImageUri"] = f"{repository}@sha256:{self.code_sha_256}"
    return resp


lambda_models.LambdaFunction.get_code = _get_code_resolved

_set_function_code = lambda_models.LambdaFunction._set_function_code


def _set_function_code_from_named_registry(self, updated_spec):
    m = ECR_IMAGE.match(updated_spec.get("ImageUri") or "")
    if not m or (m.group(1), m.group(2)) == (self.account_id, self.region):
        return _set_function_code(self, updated_spec)
    # moto looks the image up in ecr_backends[self.account_id][self.region].
    own = (self.account_id, self.region)
    self.account_id, self.region = m.group(1), m.group(2)
    try:
        return _set_function_code(self, updated_spec)
    finally:
        self.account_id, self.region = own


lambda_models.LambdaFunction._set_function_code = _set_function_code_from_named_registry

_get_authorization_token = ecr_responses.ECRResponse.get_authorization_token
ECR_TOKEN_LIFETIME = datetime.timedelta(hours=12)


def _get_authorization_token_valid_12h(self):
    result = _get_authorization_token(self)
    expires_at = datetime.datetime.now(datetime.timezone.utc) + ECR_TOKEN_LIFETIME
    for data in result.result["authorizationData"]:
        data["expiresAt"] = expires_at
    return result


ecr_responses.ECRResponse.get_authorization_token = _get_authorization_token_valid_12h

from moto.inspector2 import models as inspector_models  # noqa: E402
from moto.inspector2 import responses as inspector_responses  # noqa: E402
from moto.inspector2 import urls as inspector_urls  # noqa: E402

from moto.core.exceptions import JsonRESTError  # noqa: E402


class CoverageValidation(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("ValidationException", message)


# (account, region) -> coveredResources, as ListCoverage answers them.
INSPECTOR_COVERAGE = {}
COVERAGE_FILTERS = {
    "resourceType": lambda r: r["resourceType"],
    "accountId": lambda r: r["accountId"],
    "ecrRepositoryName": lambda r: r["resourceMetadata"]["ecrRepository"]["name"],
}


def afterpush_set_inspector_coverage(request, full_url, headers):
    body = json.loads(request.get_data() or b"{}")
    account = body.get("accountId", "123456789012")
    region = body.get("region", "us-east-1")
    resources = []
    for image in body.get("images", []):
        repo = image["repositoryName"]
        ecr_image = {"tags": image.get("imageTags", []), "inUseCount": image.get("inUseCount", 0)}
        if image.get("lastInUseAt") is not None:
            ecr_image["lastInUseAt"] = image["lastInUseAt"]
        if image.get("imagePulledAt") is not None:
            ecr_image["imagePulledAt"] = image["imagePulledAt"]
        resources.append({
            "resourceId": f"arn:aws:ecr:{region}:{account}:repository/{repo}/{image['imageDigest']}",
            "resourceType": "AWS_ECR_CONTAINER_IMAGE",
            "accountId": account,
            "scanType": "PACKAGE",
            "scanStatus": {"statusCode": "ACTIVE", "reason": "SUCCESSFUL"},
            "resourceMetadata": {
                "ecrRepository": {"name": repo, "scanFrequency": "CONTINUOUS_SCAN"},
                "ecrImage": ecr_image,
            },
        })
    INSPECTOR_COVERAGE[(account, region)] = resources
    return 200, {}, ""


def _list_coverage(self):
    params = json.loads(self.body or "{}")
    resources = INSPECTOR_COVERAGE.get((self.current_account, self.region), [])
    for name, filters in (params.get("filterCriteria") or {}).items():
        if name not in COVERAGE_FILTERS:
            raise CoverageValidation(f"filterCriteria.{name} is not modelled by the afterpush launcher")
        field = COVERAGE_FILTERS[name]
        for f in filters:
            if f.get("comparison") == "EQUALS":
                resources = [r for r in resources if field(r) == f["value"]]
            elif f.get("comparison") == "NOT_EQUALS":
                resources = [r for r in resources if field(r) != f["value"]]
            else:
                raise CoverageValidation(f"filterCriteria.{name}: comparison {f.get('comparison')!r}")
    max_results = int(params.get("maxResults") or 100)
    if not 1 <= max_results <= 200:
        raise CoverageValidation("maxResults must be between 1 and 200")
    token = params.get("nextToken")
    if token is not None and not token.isdigit():
        raise CoverageValidation("invalid nextToken")
    start = int(token or 0)
    end = start + max_results
    answer = {"coveredResources": resources[start:end]}
    if end < len(resources):
        answer["nextToken"] = str(end)
    return json.dumps(answer)


def _batch_get_account_status(self, account_ids):
    return [
        (self.account_status.get(a) or inspector_models.AccountStatus(a)).to_batch_json()
        for a in (account_ids or [self.account_id])
    ]


inspector_responses.Inspector2Response.list_coverage = _list_coverage
inspector_models.Inspector2Backend.batch_get_account_status = _batch_get_account_status
inspector_urls.url_paths["{0}/coverage/list$"] = inspector_responses.Inspector2Response.dispatch
moto_api_urls.url_paths["{0}/moto-api/afterpush/inspector-coverage"] = afterpush_set_inspector_coverage

from moto.iam.exceptions import MalformedPolicyDocument  # noqa: E402


def _validate_registry_policy_action_v2(self, policy_text):
    for statement in json.loads(policy_text)["Statement"]:
        actions = statement.get("Action", [])
        if isinstance(actions, str):
            actions = [actions]
        if any(not a.lower().startswith("ecr:") for a in actions):
            raise MalformedPolicyDocument()


models.ECRBackend._validate_registry_policy_action = _validate_registry_policy_action_v2

from moto.core.exceptions import AccessDeniedError  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.sts import responses as sts_responses  # noqa: E402
from moto.utilities.utils import get_partition  # noqa: E402

ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:.*/)?([^/]+)$")
_assume_role = sts_responses.TokenResponse.assume_role


class _AssumeRoleAccessDenied(AccessDeniedError):
    """403 AccessDenied in STS's own error document (`ErrorResponse/Error`, as the query
    protocol clients parse it; moto's generic error nests it under `Errors`)."""

    def __init__(self, caller, role_arn):
        super().__init__(caller, f"sts:AssumeRole on resource: {role_arn}")
        from xmltodict import unparse

        self.description = unparse(
            {
                "ErrorResponse": {
                    "@xmlns": "https://sts.amazonaws.com/doc/2011-06-15/",
                    "Error": {"Type": "Sender", "Code": "AccessDenied", "Message": self.message},
                    "RequestId": "afterpush-assume-role-denied",
                }
            },
            full_document=True,
        )


def _required_external_ids(role):
    """The `sts:ExternalId` values the role's trust policy requires (StringEquals)."""
    try:
        document = json.loads(role.assume_role_policy_document or "{}")
    except (TypeError, ValueError):
        return set()
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    required = set()
    for statement in statements:
        equals = (statement.get("Condition") or {}).get("StringEquals") or {}
        value = equals.get("sts:ExternalId")
        if isinstance(value, str):
            required.add(value)
        elif isinstance(value, list):
            required.update(v for v in value if isinstance(v, str))
    return required


def _assume_existing_role(self):
    role_arn = self._get_param("RoleArn") or ""
    m = ROLE_ARN.match(role_arn)
    exists = False
    if m:
        try:
            role = iam_backends[m.group(2)][m.group(1)].get_role(m.group(3))
            required = _required_external_ids(role)
            exists = not required or self._get_param("ExternalId") in required
        except Exception:
            exists = False
    if not exists:
        caller = f"arn:{get_partition(self.region)}:iam::{self.get_current_account()}:root"
        raise _AssumeRoleAccessDenied(caller, role_arn)
    return _assume_role(self)


sts_responses.TokenResponse.assume_role = _assume_existing_role

from moto.sqs import models as sqs_models  # noqa: E402

_queue_add_message = sqs_models.Queue.add_message


def _add_message_within_dedup_interval(self, message):
    # A message already added to a queue is being moved to this one (its dead-letter
    # queue): not a send.
    if getattr(message, "_afterpush_sent", False):
        return _queue_add_message(self, message)
    message._afterpush_sent = True
    if self.fifo_queue and message.deduplication_id:
        sent = self.__dict__.setdefault("_afterpush_dedup_ids", {})
        now = message.sent_timestamp
        for dedup_id, at in list(sent.items()):
            if (now - at) / 1000 >= sqs_models.DEDUPLICATION_TIME_IN_SECONDS:
                del sent[dedup_id]
        if message.deduplication_id in sent:
            return None
        sent[message.deduplication_id] = now
    return _queue_add_message(self, message)


sqs_models.Queue.add_message = _add_message_within_dedup_interval

from moto.server import main  # noqa: E402

main(sys.argv[1:])
