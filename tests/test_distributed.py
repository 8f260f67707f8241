"""Sharded runs: two gloo processes under torchrun against one process, and a killed rank.

These launch real processes (``python -m torch.distributed.run --standalone``) on the
session's tiny model, each with one thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SEED_OPTION

from nodeguard.data.datasets import load_dataset
from nodeguard.models.loading import load_model
from nodeguard.runtime.distributed import Ranks, current_ranks, oversubscription_warning, share
from nodeguard.stages.attack import attack_one_batch
from nodeguard.stages.attack_sets import load_attack_set
from nodeguard.storage.files import load_tagged
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import ResultStore

ATTACK = ["attack", "cw", "--model", "tiny", "--count", "6", "--steps", "20", "--binary-steps", "2"]


def run_nodeguard(home: Path, args: list[str], ranks: int = 1, **popen) -> subprocess.Popen:
    env = {**os.environ, "NODEGUARD_HOME": str(home), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if ranks == 1:
        command = [sys.executable, "-m", "nodeguard", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        command += ["-m", "nodeguard", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout, stderr


def copy_home(trained_root: Path, target: Path) -> Path:
    shutil.copytree(trained_root, target)
    return target


def test_shares_cover_every_item_once_in_order():
    for count in (0, 1, 7, 40):
        for world in (1, 2, 3, 5):
            parts = [share(count, Ranks(rank, world)) for rank in range(world)]
            assert [i for part in parts for i in part] == list(range(count))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_ranks_come_from_the_environment_and_threads_are_checked(monkeypatch):
    assert current_ranks() == Ranks()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert current_ranks() == Ranks(1, 2, 1, 2) and current_ranks().sharded
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert "4 threads on 2 cores" in oversubscription_warning(cpu_count=2)
        torch.set_num_threads(1)
        assert oversubscription_warning(cpu_count=2) is None
    finally:
        torch.set_num_threads(threads)


def test_two_ranks_make_the_same_attack_set_and_roc_as_one_process(trained_root, tmp_path):
    """Two ranks attack the 6 digits dealt out round-robin (rank 0 rows 0, 2, 4; rank 1
    rows 1, 3, 5), each in one batch. One process attacking the same rows in one batch,
    with one thread, runs the same operations, so the set is equal to theirs bit for bit.
    (Another batch rounds batched convolutions differently, and 500 Adam steps can carry
    that into another point near the boundary: the README gives the measured sizes.)"""
    alone_home = copy_home(trained_root, tmp_path / "alone")
    sharded_home = copy_home(trained_root, tmp_path / "sharded")
    alone = json.loads(finish(run_nodeguard(alone_home, [*ATTACK, "--json"]))[0])
    sharded_out, _ = finish(run_nodeguard(sharded_home, [*ATTACK, "--json", "--threads", "1"], ranks=2))
    sharded = json.loads(sharded_out)  # rank 0 alone prints the result: stdout is one JSON object
    one = load_attack_set(Registry(alone_home), "tiny", alone["set"])
    two = load_attack_set(Registry(sharded_home), "tiny", sharded["set"])
    assert len(one) == len(two) == 6 and sharded["set"] == alone["set"]  # the same settings, the same key
    # (the ranks classify halves of the candidates: the digits chosen can differ from one
    # process's only where a clean margin is within rounding of zero, so not compared)
    settings = two.settings
    loaded = load_model("tiny", registry=Registry(alone_home))
    split = load_dataset("mnist5k").split("test")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as each rank
        for rank in range(2):
            rows = two.indices[rank::2]
            batch = attack_one_batch(loaded, settings, split.float_images(rows), split.labels[rows], 0)
            for field in ("labels", "success", "adversarial", "margin", "adversarial_8bit", "margin_8bit"):
                assert torch.equal(batch[field], getattr(two, field)[rank::2]), (rank, field)
    finally:
        torch.set_num_threads(threads)
    folder = ResultStore(Registry(sharded_home), "tiny").find("attack_set", sharded["set"]).folder
    assert not list(folder.glob("shard-*"))  # joined, then the shards are removed

    # the ROC: the sharded job finds the same attack set and splits only the votes. Its
    # negatives come from blend, which succeeds by construction (conftest), made once alone
    blend = ["--model", "tiny", "--count", "6", "--attack", "blend"]
    finish(run_nodeguard(alone_home, ["attack", "blend", "--model", "tiny", "--count", "6", "--json"]))
    roc = ["roc", *blend, "--votes", "3,5"]
    roc_alone = json.loads(finish(run_nodeguard(alone_home, [*roc, "--json"]))[0])
    roc_home = tmp_path / "roc-sharded"
    shutil.copytree(alone_home, roc_home)
    shutil.rmtree(Registry(roc_home).results_dir("tiny") / "votes")
    roc_out, roc_err = finish(run_nodeguard(roc_home, [*roc, "--json", "--threads", "1"], ranks=2))
    roc_sharded = json.loads(roc_out)
    assert "already exists for tiny; reusing it" in roc_err
    assert roc_sharded["set"] == roc_alone["set"] and roc_sharded["adversarial"] == roc_alone["adversarial"] == 6
    assert [curve["votes"] for curve in roc_sharded["curves"]] == [3, 5]
    stored_one = sorted((Registry(alone_home).results_dir("tiny") / "votes").glob("*/result.pt"))
    stored_two = sorted((Registry(roc_home).results_dir("tiny") / "votes").glob("*/result.pt"))
    assert [path.parent.name for path in stored_one] == [path.parent.name for path in stored_two]
    assert len(stored_two) == 2  # pristine and adversarial votes, saved once, under the same keys
    differing = 0
    for path_one, path_two in zip(stored_one, stored_two, strict=True):
        votes_one = load_tagged(path_one, expected_kind="votes")["predictions"]
        votes_two = load_tagged(path_two, expected_kind="votes")["predictions"]
        assert votes_one.shape == votes_two.shape
        differing += int((votes_one != votes_two).sum())
    # every (image, tolerance) pair is solved on its own steps; its batch changes only
    # rounding (1e-6 of a logit), which can flip a vote only where two logits tie within
    # it: the stated tolerance is one vote of the 60
    assert differing <= 1
    # each job's curves are the curves of the votes it stored
    for home, report in ((alone_home, roc_alone), (roc_home, roc_sharded)):
        assert [curve["auc"] for curve in report["curves"]] == aucs_of_stored_votes(home, report["set"], (3, 5))


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_two_nodes(homes: tuple[Path, Path], args: list[str]) -> list[subprocess.Popen]:
    """Two torchrun agents on this machine, one rank each, joined by c10d rendezvous on
    localhost (``--nnodes 2``): two "nodes" of one job, each with its own cache root path."""
    port, run = free_port(), f"nodes-{os.getpid()}-{time.monotonic_ns()}"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    launcher += ["--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", f"--rdzv-id={run}"]
    processes = []
    for home in homes:
        env = {**os.environ, "NODEGUARD_HOME": str(home), "OMP_NUM_THREADS": "1"}
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        command = [*launcher, "-m", "nodeguard", *args]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def test_two_nodes_sharing_the_cache_root_give_one_process_rows_and_unshared_roots_are_refused(trained_root, tmp_path):
    """Two agents joined over c10d (the engine a cluster runs) vote on the ROC's images as
    two ranks and give the one-process curves; with a cache root of its own per node each
    rank refuses in one line, before any work, naming the rank and host that sees another."""
    alone_home = copy_home(trained_root, tmp_path / "alone")
    finish(run_nodeguard(alone_home, ["attack", "blend", "--model", "tiny", "--count", "6", "--json"]))
    roc = ["roc", "--model", "tiny", "--count", "6", "--attack", "blend", "--votes", "3,5", "--json"]
    roc_alone = json.loads(finish(run_nodeguard(alone_home, roc))[0])
    shared = tmp_path / "shared"
    shutil.copytree(alone_home, shared)
    shutil.rmtree(Registry(shared).results_dir("tiny") / "votes")
    agents = run_two_nodes((shared, shared), [*roc, "--threads", "1"])
    try:
        outputs = [finish(process) for process in agents]
    finally:
        for process in agents:
            process.kill()
    printed = [json.loads(stdout) for stdout, _ in outputs if stdout.strip()]
    assert len(printed) == 1  # rank 0 alone prints the report
    roc_nodes = printed[0]
    assert roc_nodes["set"] == roc_alone["set"] and roc_nodes["adversarial"] == roc_alone["adversarial"] == 6
    assert [curve["auc"] for curve in roc_nodes["curves"]] == aucs_of_stored_votes(shared, roc_nodes["set"], (3, 5))
    differing = 0  # as between two local ranks and one process: a vote may flip where two logits tie
    for one, two in zip(
        sorted((Registry(alone_home).results_dir("tiny") / "votes").glob("*/result.pt")),
        sorted((Registry(shared).results_dir("tiny") / "votes").glob("*/result.pt")),
        strict=True,
    ):
        assert one.parent.name == two.parent.name
        votes_one = load_tagged(one, expected_kind="votes")["predictions"]
        differing += int((votes_one != load_tagged(two, expected_kind="votes")["predictions"]).sum())
    assert differing <= 1
    assert not list(shared.glob(".shared-by-ranks-*"))  # the check's file is gone

    # the same job with a cache root per node (both hold the model: only the check can tell)
    unshared = (copy_home(trained_root, tmp_path / "node0"), copy_home(trained_root, tmp_path / "node1"))
    failed = run_two_nodes(unshared, [*roc, "--threads", "1"])
    errors = []
    try:
        for process in failed:
            _, stderr = process.communicate(timeout=600)
            assert process.returncode != 0
            errors.append(stderr)
    finally:
        for process in failed:
            process.kill()
    lines = [line for stderr in errors for line in stderr.splitlines() if "is not shared with rank" in line]
    assert len(lines) == 2, errors  # one line per rank
    for line in lines:  # rank 0's root and that of the rank that does not see it (c10d picks who is rank 0)
        assert "of rank 0 on" in line and "is not shared with rank 1 on" in line and "NODEGUARD_HOME" in line
        assert str(unshared[0]) in line and str(unshared[1]) in line
    assert "nodeguard/" not in "".join(line for stderr in errors for line in stderr.splitlines() if 'File "' in line)
    for home in unshared:
        assert not (Registry(home).results_dir("tiny") / "attack_set").exists()  # no work was done
        assert not list(home.glob(".shared-by-ranks-*"))


def aucs_of_stored_votes(home: Path, set_key: str, votes: tuple[int, ...]) -> list[float]:
    """The AUC for each V of the pristine and adversarial votes stored in ``home``."""
    from nodeguard.defense.votes import stored_votes
    from nodeguard.experiments.roc import roc_from_scores
    from nodeguard.stages.roc import RocSettings

    registry = Registry(home)
    loaded = load_model("tiny", registry=registry, device="cpu")
    attack_set = load_attack_set(registry, "tiny", set_key)
    defense = RocSettings(votes=votes, attack="blend").defense()
    scores = []
    for name, images in (("pristine", attack_set.clean), ("adversarial", attack_set.successful_8bit_images())):
        tally, found = stored_votes(loaded, defense, images, name)
        assert found
        scores.append(tally)
    return [roc_from_scores(scores[0].v_agree(v).numpy(), scores[1].v_agree(v).numpy(), v).auc for v in votes]


def rank_process(home: Path, rank: int) -> int | None:
    """The pid of the nodeguard process of ``rank`` running on ``home`` (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"NODEGUARD_HOME={home}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_loses_at_most_its_batch_and_the_same_command_finishes(trained_root, tmp_path):
    home = copy_home(trained_root, tmp_path / "home")
    args = [*ATTACK, "--batch-size", "1", "--json", "--threads", "1"]
    job = run_nodeguard(home, args, ranks=2, start_new_session=True)
    shard = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        shard = next(home.glob("models/tiny/results/attack_set/*/shard-1-of-2.pt"), None)
        if shard is not None:
            break
        time.sleep(0.1)
    assert shard is not None, "rank 1 saved no batch"
    pid = rank_process(home, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    job.communicate(timeout=120)
    assert job.returncode != 0  # one rank failed: the job fails
    saved = load_tagged(shard, expected_kind="attack_shard")["units"]
    assert 1 <= len(saved) <= 3  # rank 1's share: 3 images, one batch each, saved one by one
    rerun_out, rerun_err = finish(run_nodeguard(home, args, ranks=2))
    if len(saved) < 3:
        assert "[rank 1 of 2] continuing attack" in rerun_err and f"after {len(saved)} finished" in rerun_err
    report = json.loads(rerun_out)
    attack_set = load_attack_set(Registry(home), "tiny", report["set"])
    assert len(attack_set) == 6 and not list(shard.parent.glob("shard-*"))
    for (_, rows), batch in saved.items():  # the batches saved before the kill are in the set as saved
        assert rows in ((1,), (3,), (5,))  # rank 1's rows, one per batch
        assert torch.equal(attack_set.adversarial[list(rows)], batch["adversarial"])


def test_ddp_training_under_two_ranks_follows_the_one_process_run(tmp_path):
    """The ResNet has no solver, so one step on two half-batches is the step on the whole
    batch up to float rounding (GroupNorm is per image; each rank's loss is its share of
    the batch's mean). With SGD the step is linear in the gradient, so three steps stay
    within 1e-4 of one process's weights (Adam divides by the gradient's size and turns
    rounding in near-zero gradients into steps of up to lr, so it is not used here)."""
    args = ["train", "mnist5k", "--arch", "resnet", "--epochs", "1", "--filters", "8", "--batch-size", "64"]
    args += ["--optimizer", "sgd", "--schedule", "constant", "--lr", "0.05"]
    args += ["--train-limit", "192", "--test-limit", "32", "--name", "r", "--json", *SEED_OPTION]
    alone = json.loads(finish(run_nodeguard(tmp_path / "alone", args))[0])
    sharded = json.loads(finish(run_nodeguard(tmp_path / "sharded", [*args, "--threads", "1"], ranks=2))[0])
    assert sharded["epochs"] == alone["epochs"] == 1
    assert sharded["history"][0]["train_loss"] == pytest.approx(alone["history"][0]["train_loss"], abs=1e-3)
    weights_one = Registry(tmp_path / "alone").read_checkpoint("r")["model"]
    weights_two = Registry(tmp_path / "sharded").read_checkpoint("r")["model"]
    assert weights_one.keys() == weights_two.keys()
    for key in weights_one:
        assert float((weights_one[key].float() - weights_two[key].float()).abs().max()) <= 1e-4, key
    assert Registry(tmp_path / "sharded").get("r").status == "ready"
