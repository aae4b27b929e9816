"""The operator acts only on pods it owns: a pod with the job's labels but another controller (or
none) is invisible to it, however it is labelled (issue 12: a rogue pod labelled as the root)."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.observe import observe_pod, owned_by

JOB_UID = "uid-of-the-swarmtraining"


def _pod(node: str, refs: list[dict[str, Any]] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"digits-{node}",
        "uid": f"pod-{node}",
        "labels": {
            "swarm.ncrsh.io/job": "digits",
            "swarm.ncrsh.io/node": node,
            "swarm.ncrsh.io/role": "root",
        },
    }
    if refs is not None:
        meta["ownerReferences"] = refs
    return {"metadata": meta, "status": {"phase": "Running"}}


def _ref(uid: str, *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "swarm.ncrsh.io/v1alpha1",
        "kind": "SwarmTraining",
        "uid": uid,
        "controller": controller,
    }


def test_owned_pods_are_seen() -> None:
    seen = observe_pod(_pod("root", [_ref(JOB_UID)]))
    assert seen.owner_uid == JOB_UID
    assert owned_by([seen], JOB_UID) == {"root": seen}


@pytest.mark.parametrize(
    "refs",
    [None, [], [_ref("uid-of-another-object")], [_ref(JOB_UID, controller=False)]],
    ids=["no-owner", "empty-owners", "another-controller", "owner-but-not-controller"],
)
def test_a_pod_with_the_jobs_labels_but_not_its_controller_is_ignored(
    refs: list[dict[str, Any]] | None,
) -> None:
    real = observe_pod(_pod("worker-0", [_ref(JOB_UID)]))
    rogue = observe_pod(_pod("root", refs))
    assert owned_by([real, rogue], JOB_UID) == {"worker-0": real}


def test_an_empty_owner_uid_matches_nothing() -> None:
    assert owned_by([observe_pod(_pod("root", None))], "") == {}
