"""The real engine in the lab: ``pulumi up`` (the CLI built from Go source by
./build-engine) against a real Kubernetes API at the master's place, from the
seed's fault state (objects made with kubectl), on one boot of the LB guest.

The scenario is ``lab.full.scenario`` (also ``lab/lab demo``): the policy
pack's preview of a stack that keeps HAProxy (fails) and of keepsource's
(passes), the first ``up`` while host01 and worker01 query the API through
VIP:6443, the engine's event order, the clients, a second ``up`` with no
changes, every LB step replaced (each ``unchanged``), refresh then preview with
no changes, drift named and repaired by the printed command, the exported state,
a reboot of the LB, and ``destroy``. Needs root, qemu and the built engine
(run-tests builds it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.lab]

_MISSING = [t for t in ("qemu-system-x86_64", "debootstrap", "ip", "socat") if not shutil.which(t)]
if os.geteuid() != 0 or _MISSING:
    pytest.skip(
        f"lab tests need root and {_MISSING or 'the lab tools'} (run `sudo ./run-tests`)",
        allow_module_level=True,
    )

from engine.build import build  # noqa: E402
from lab import full, kube, run  # noqa: E402


@pytest.fixture(scope="module")
def lab() -> Iterator[run.Plan]:
    build()  # cached: the binaries this module runs (a clear error when one cannot be built)
    run.down()
    plan = run.make_plan()
    print(f"up --kube: {run.up(plan, kube=True)}")
    print(f"control plane: {full.start(plan)}")
    try:
        yield plan
    finally:
        run.down()


def test_the_seeds_objects_are_kubectls(lab: run.Plan) -> None:
    """The fault state's objects were made by kubectl: pulumi up must adopt them."""
    s = lab.settings
    out = kube.kubectl(
        "get", "-n", s.workload.namespace, "service", s.workload.name,
        "-o", "jsonpath={.metadata.managedFields[*].manager} {.spec.externalTrafficPolicy}",
    )  # fmt: skip
    managers, policy = out.rsplit(" ", 1)
    assert "kubectl" in managers and "pulumi" not in managers, out
    assert policy == "Cluster"


def test_the_real_engine_takes_the_lab_from_fault_to_fix(lab: run.Plan) -> None:
    table = run.Table()
    seen = full.scenario(lab, table)
    code = table.report("engine", full.SCENARIO_ROWS)
    failed = [f"{name}: {detail}" for name, ok, detail in table.rows if not ok]
    assert not failed, "\n".join(failed)
    assert code == 0, f"{len(table.rows)} rows, expected {full.SCENARIO_ROWS}"
    # The violation names the guard's rule and the HAProxy command, as a PR reader sees it.
    assert "seed-haproxy" in seen["bad_preview"], seen["bad_preview"][-2000:]
    # After the first up, Service and NetworkPolicy are pulumi's (adopted, forced apply).
    s = lab.settings
    out = kube.kubectl(
        "get", "-n", s.workload.namespace, "service", s.workload.name,
        "-o", "jsonpath={.spec.externalTrafficPolicy}",
    )  # fmt: skip
    assert out == "Local"
