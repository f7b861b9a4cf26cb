"""Shared rig processes for the end-to-end tests.

Starting a ``rigdeck serve`` process costs a Python start-up, so the rigs that several tests can share
run once per test session (``lab``) and are reset to CONNECTED after each test that used them; tests
that kill a rig start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e import reset_rigs
from helpers import run
from rigprocs import RigCluster, rig_processes

#: the shared rigs: a main-sync rig, three recorder rigs, one that fails EXPSTART, one slow to stop,
#: a second main-sync claimant
LAB: dict[str, dict] = {
    "sync": {"main_sync": True, "drivers": {"recorders": {"nidq": {"kind": "ephys", "rate": 500, "frame_size": 8}}}},
    "cams": {"drivers": {"recorders": {"left": {"kind": "camera", "rate": 60},
                                       "right": {"kind": "camera", "rate": 30}}}},
    "ephys": {"drivers": {"recorders": {"probe00": {"kind": "ephys", "rate": 1000, "frame_size": 32}}}},
    "mic": {"drivers": {"recorders": {"mic": {"kind": "microphone", "rate": 2000}}}},
    "bad": {"fail_on": ["EXPSTART"], "drivers": {"recorders": {"cam": {"kind": "camera", "rate": 30}}}},
    "slowstop": {"delay_on": {"EXPEND": 3.0}},
    "sync2": {"role": "aux", "main_sync": True, "drivers": {"recorders": {"bpod": {"kind": "ephys", "rate": 200}}}},
}


@pytest.fixture(scope="session")
def lab_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RigCluster]:
    with rig_processes(tmp_path_factory.mktemp("lab"), LAB) as cluster:
        yield cluster


@pytest.fixture
def lab(lab_cluster: RigCluster) -> Iterator[RigCluster]:
    """The shared rigs, all CONNECTED; reset again after the test whatever it did to them."""
    yield lab_cluster
    alive = [name for name, proc in lab_cluster.procs.items() if proc.alive()]
    run(reset_rigs(lab_cluster.specs_for(alive, roles=False)), timeout=20)
