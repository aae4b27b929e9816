"""kopf handlers of the ncrsh-swarm operator: thin glue between kopf, the API and the pure core.

Run it with `python -m swarm_operator` (reads Settings, then execs `kopf run`), or directly:

    kopf run --standalone -m swarm_operator.handlers --all-namespaces \
        --liveness=http://0.0.0.0:8080/healthz

- `swarm_pods`: an index of the swarm pods by (namespace, job), each reduced to a PodObservation.
- `create_children` (create and resume): the headless Service, the ConfigMap, the Secret of the
  job's CURVE keys (swarm_operator.keys), the NetworkPolicy (unless turned off) and, on first
  creation only, every pod of the tree. Creating what exists is a no-op (409), so an operator that
  restarts mid-creation adds nothing twice; on resume of a started job, missing pods are left to
  the restart logic and its budget.
- `keep_swarm` (a daemon per SwarmTraining, one tick every `sync_interval_seconds`): reads the
  pods and the root's /status (every root replica's: swarm_operator.replicas), calls `reconcile`,
  patches status, replaces pods, emits events, deletes the job once its TTL after finishing ran
  out. All state it needs is in the status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from swarm_contract.command import process_ids, process_node
from swarm_contract.labels import JOB_LABEL
from swarm_contract.manifest import parse_spec
from swarm_contract.records import RootStatus
from swarm_contract.spec import API_GROUP, API_VERSION, SpecError, SwarmSpec
from swarm_operator import metrics
from swarm_operator.builders import build_configmap, build_secret, build_service, tree_of
from swarm_operator.crdgen import PLURAL
from swarm_operator.netpol import build_network_policy
from swarm_operator.observe import (
    PodObservation,
    fetch_root_status,
    final_root_status,
    observe_pod,
    owned_by,
    root_status_url,
)
from swarm_operator.pods import build_pod, build_pods
from swarm_operator.reconcile import Actions, reconcile
from swarm_operator.replicas import agreed_status, replica_pods
from swarm_operator.restarts import iso
from swarm_operator.settings import Settings
from swarm_operator.status import TERMINAL_PHASES

MERGE_PATCH = "application/merge-patch+json"
Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.startup()
def configure(*, settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    ours = Settings.from_env()
    memo.settings = ours
    # Keep kopf's bookkeeping in annotations: the status schema is ours and prunes unknown fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    memo.core = client.CoreV1Api()
    memo.custom = client.CustomObjectsApi()
    memo.networking = client.NetworkingV1Api()
    metrics.serve(ours.metrics_port)
    logger.info("swarm-operator settings: %s", ours)


@kopf.index("pods", labels={JOB_LABEL: kopf.PRESENT})
def swarm_pods(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[tuple[str, str], PodObservation]:
    return {(namespace or "", labels[JOB_LABEL]): observe_pod(body)}


def _spec(spec: Mapping[str, Any]) -> SwarmSpec:
    try:
        return parse_spec(dict(spec))
    except SpecError as e:
        raise kopf.PermanentError(str(e)) from e


def _create(create: Callable[..., Any], namespace: str, body: dict[str, Any]) -> bool:
    """Create one child; False when it exists already (idempotent after an operator restart)."""
    try:
        create(namespace, body)
    except ApiException as e:
        if e.status == 409:
            return False
        raise kopf.TemporaryError(
            f"creating {body['kind']} {body['metadata']['name']}: {e.reason}", delay=5
        ) from e
    return True


def _pods_of(
    index: kopf.Index[tuple[str, str], PodObservation], namespace: str, name: str, owner_uid: str
) -> dict[str, PodObservation]:
    """The job's pods: labelled with its name AND controlled by this very object (its uid). Labels
    are anyone's to set: a pod that only claims the job's labels is neither watched nor trusted."""
    found: Iterable[PodObservation] = index.get((namespace, name), [])
    return owned_by(found, owner_uid)


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
def create_children(
    *,
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Logger,
    **kwargs: Any,
) -> None:
    index: kopf.Index[tuple[str, str], PodObservation] = kwargs["swarm_pods"]
    try:
        parsed = _spec(spec)
    except kopf.PermanentError as e:
        patch.status.update(phase="Failed", reason="InvalidSpec", message=str(e), completionTime=iso(_now()))
        raise
    if status.get("phase") in TERMINAL_PHASES:
        return
    namespace = namespace or "default"
    core: client.CoreV1Api = memo.core
    _create(core.create_namespaced_service, namespace, build_service(parsed, body))
    _create(core.create_namespaced_config_map, namespace, build_configmap(parsed, body))
    # The CURVE keys, before any pod mounts them; an existing Secret is kept (409), so a restarted
    # operator never gives the running nodes new identities.
    _create(core.create_namespaced_secret, namespace, build_secret(parsed, body))
    if memo.settings.network_policy:
        networking: client.NetworkingV1Api = memo.networking
        policy = build_network_policy(parsed, body, memo.settings)
        _create(networking.create_namespaced_network_policy, namespace, policy)
    if status.get("startTime"):
        return  # started before: missing pods are the restart logic's (and budget's) business
    existing = _pods_of(index, namespace, name, str(body.metadata.uid))
    created = 0
    for pod in build_pods(parsed, body, memo.settings):
        if pod["metadata"]["labels"]["swarm.ncrsh.io/node"] in existing:
            continue
        if _create(core.create_namespaced_pod, namespace, pod):
            created += 1
            metrics.PODS_CREATED.labels(pod["metadata"]["labels"]["swarm.ncrsh.io/role"]).inc()
    tree = tree_of(parsed)
    patch.status.update(
        phase="Pending", startTime=iso(_now()), workers=len(tree.workers), ready=f"0/{len(tree.workers)}"
    )
    logger.info("created %d pods for %d workers", created, parsed.workers.replicas)
    kopf.info(body, reason="Created", message=f"created the swarm: {len(process_ids(parsed))} pods")


def _now() -> datetime:
    return datetime.now(UTC)


def _apply(
    actions: Actions, parsed: SwarmSpec, body: kopf.Body, name: str, namespace: str, memo: kopf.Memo
) -> None:
    core: client.CoreV1Api = memo.core
    custom: client.CustomObjectsApi = memo.custom
    # Status first: a counted restart is on record before its pod goes.
    custom.patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": actions.status}, _content_type=MERGE_PATCH
    )
    for deletion in actions.delete:
        try:
            core.delete_namespaced_pod(
                deletion.pod, namespace, grace_period_seconds=0 if deletion.force else None
            )
        except ApiException as e:
            if e.status != 404:
                raise
    for node_id in actions.create:
        node = process_node(parsed, node_id)
        if _create(core.create_namespaced_pod, namespace, build_pod(parsed, body, node, memo.settings)):
            metrics.PODS_CREATED.labels(node.role).inc()
    for event in actions.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if event.reason.startswith("Node") and event.type == "Warning":
            metrics.POD_REPLACEMENTS.labels(event.reason.removeprefix("Node")).inc()
    if actions.delete_job:
        custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)


def _root_status(pod: PodObservation, spec: SwarmSpec, settings: Settings) -> RootStatus | None:
    """A root replica's /status while its pod runs, the one it left when it finished, else None."""
    if pod.ip and pod.phase == "Running":
        found = fetch_root_status(
            root_status_url(pod.ip, spec.network.metrics_port), settings.status_timeout_seconds
        )
        if found is None:
            metrics.ROOT_STATUS_ERRORS.inc()
        return found
    return final_root_status(pod)


def tick(
    body: kopf.Body,
    name: str,
    namespace: str,
    memo: kopf.Memo,
    index: kopf.Index[tuple[str, str], PodObservation],
) -> None:
    status = dict(body.get("status") or {})
    if not status.get("startTime"):
        return  # create_children has not finished yet
    try:
        parsed = parse_spec(dict(body.get("spec") or {}))
    except SpecError:
        return  # create_children reported it
    settings: Settings = memo.settings
    pods = _pods_of(index, namespace, name, str(body.metadata.uid))
    found = (_root_status(p, parsed, settings) for p in replica_pods(pods, parsed.consensus.replicas))
    statuses = [s for s in found if s is not None]
    actions = reconcile(
        parsed,
        pods,
        agreed_status(statuses, parsed.consensus.replicas),
        status,
        now=_now(),
        generation=int(body.get("metadata", {}).get("generation") or 0),
        settings=settings,
    )
    _apply(actions, parsed, body, name, namespace, memo)
    metrics.JOB_ROUND.labels(namespace, name).set(actions.status.get("round") or 0)
    metrics.JOB_READY_WORKERS.labels(namespace, name).set(actions.status.get("readyWorkers") or 0)
    if actions.status.get("completionTime") and status.get("phase") not in TERMINAL_PHASES:
        metrics.JOBS_FINISHED.labels(actions.status["phase"]).inc()


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=10.0)
def keep_swarm(
    *,
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    logger: Logger,
    **kwargs: Any,
) -> None:
    """The reconcile timer of one SwarmTraining (a daemon, so its period is a runtime setting)."""
    index: kopf.Index[tuple[str, str], PodObservation] = kwargs["swarm_pods"]
    settings: Settings = memo.settings
    namespace = namespace or "default"
    while not stopped:
        with metrics.RECONCILE_SECONDS.time():
            try:
                tick(body, name, namespace, memo, index)
                metrics.RECONCILES.labels("ok").inc()
            except (ApiException, kopf.TemporaryError) as e:
                metrics.RECONCILES.labels("error").inc()
                logger.warning("reconcile of %s/%s failed, retrying next tick: %s", namespace, name, e)
        stopped.wait(settings.sync_interval_seconds)
    metrics.forget_job(namespace, name)
