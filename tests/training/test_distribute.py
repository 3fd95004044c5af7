"""suite/training/distribute.py: the plan from flags and TF_CONFIG, lost
peers in one line, and real clusters of train.py processes on 127.0.0.1 (workers
that disagree, a worker blocked when SIGTERM comes)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

import train
from helpers import REPO, finish, free_ports, one_error_line, run_script
from suite.model import checkpoints
from suite.model.manifest import load_manifest
from suite.plumbing.errors import UserError
from suite.training import distribute, peer_watch
from suite.training.config import BASE_LEARNING_RATE


# The cluster tests' demo run: layer_14 at 32 px, a few steps.
CLUSTER_ARGS = ("--model", "layer_14", "--image_size", "32", "--batch_size", "8",
                "--seed", "1", "--log_every_steps", "1", "--eval_every_epochs", "0")


def plan_of(argv, environ=None):
    return distribute.plan(train.parse_args(argv), environ or {})


def test_one_device_without_a_cluster_keeps_the_plain_graph():
    plan = plan_of([])
    assert not plan.replicated and plan.num_replicas == 1 and plan.is_chief


def test_cpu_replicas_are_logical_devices_of_one_process():
    plan = plan_of(["--num_cpu_replicas", "2"])
    assert plan.local_devices == ["/cpu:0", "/cpu:1"] and plan.logical_cpus == 2
    assert plan.replicated and not plan.multi_worker and plan.num_replicas == 2


def test_worker_hosts_and_tf_config_give_the_same_cluster():
    hosts = "127.0.0.1:2222,127.0.0.1:2223"
    by_flags = plan_of(["--worker_hosts", hosts, "--task_index", "1"])
    tf_config = json.dumps({"cluster": {"worker": hosts.split(",")},
                            "task": {"type": "worker", "index": 1}})
    by_env = plan_of([], {"TF_CONFIG": tf_config})
    for plan in (by_flags, by_env):
        assert plan.cluster == {"worker": hosts.split(",")} and plan.num_workers == 2
        assert plan.num_replicas == 2 and not plan.is_chief
        assert plan.peers() == [("worker", 0, "127.0.0.1:2222")]


def test_a_tfjob_chief_is_the_chief_and_counts_as_a_worker():
    tf_config = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                 "task": {"type": "worker", "index": 0}}
    plan = plan_of([], {"TF_CONFIG": json.dumps(tf_config)})
    assert plan.num_workers == 3 and not plan.is_chief and plan.worker_index == 1
    tf_config["task"] = {"type": "chief", "index": 0}
    assert plan_of([], {"TF_CONFIG": json.dumps(tf_config)}).is_chief


@pytest.mark.parametrize("argv, environ, words", [
    (["--num_gpus", "1"], {}, "sees 0 GPU"),
    (["--task_index", "0"], {}, "go together"),
    (["--worker_hosts", "a:1,b:2", "--task_index", "2"], {}, "--task_index 2"),
    (["--worker_hosts", "a:1,nonsense", "--task_index", "0"], {}, "not host:port"),
    (["--worker_hosts", "a:1,a:1", "--task_index", "0"], {}, "twice"),
    (["--worker_hosts", "a:1,b:2", "--task_index", "0"],
     {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, "give one"),
    ([], {"TF_CONFIG": "{not json"}, "TF_CONFIG"),
    ([], {"TF_CONFIG": '{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, '
                       '"task": {"type": "worker", "index": 0}}'}, "parameter servers"),
    ([], {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}, '
                       '"task": {"type": "worker", "index": 5}}'}, "not in its cluster"),
    (["--num_cpu_replicas", "2", "--worker_hosts", "a:1,b:2", "--task_index", "0"], {},
     "one machine"),
    (["--worker_hosts", "a:1,b:70000", "--task_index", "0"], {}, "1 to 65535"),
    (["--worker_hosts", "127.0.0.1:5000,localhost:5000", "--task_index", "0"], {},
     "127.0.0.1:5000 and localhost:5000 are the same socket"),
    ([], {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}, '
                       '"task": {"type": "worker", "index": 1e400}}'}, "not a whole number"),
    ([], {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}, '
                       '"task": {"type": "worker", "index": 1.9}}'}, "1.9 is not a whole"),
    ([], {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}, '
                       '"task": {"type": "worker", "index": true}}'}, "true is not a whole"),
])
def test_a_wrong_cluster_or_device_count_is_one_line(argv, environ, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        plan_of(argv, environ)


def test_a_lost_peers_error_names_it():
    plan = plan_of(["--worker_hosts", "127.0.0.1:2222,127.0.0.1:2223", "--task_index", "0"])
    # What a surviving worker got when its peer was killed (abridged).
    error = tf.errors.UnavailableError(None, None, (
        "Graph execution error:\n\nDetected at node 'CollectiveReduceV2'\n"
        "From /job:worker/replica:0/task:0:\nCollective ops is aborted by: recvmsg:Connection "
        "reset by peer\nAdditional GRPC error information from remote target "
        "/job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:\n"
        ":UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:\"recvmsg:Connection "
        "reset by peer\"}"))
    message = str(distribute.lost_peer_error(plan, error))
    assert "lost worker 1 (127.0.0.1:2223) (recvmsg:Connection reset by peer)" in message
    assert "\n" not in message
    assert distribute.lost_peer_error(plan, tf.errors.OutOfRangeError(None, None, "end")) is None


@pytest.mark.slow
def test_two_cpu_replicas_train_and_evaluation_loads_them(colour_data, tmp_path):
    _, data_dir = colour_data
    model_dir = str(tmp_path / "models")
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir,
                        *CLUSTER_ARGS, "--num_cpu_replicas", "2", "--epochs", "0.5",
                        timeout=300)
    assert "2 CPU replicas; global batch 16 (8 per replica)" in result.stdout
    manifest = load_manifest(model_dir)
    training = manifest["training"]
    assert (training["replicas"], training["global_batch_size"]) == (2, 16)
    # the linear scaling rule on the global batch
    assert training["learning_rate"] == pytest.approx(
        BASE_LEARNING_RATE[manifest["stem"]] * 16 / 256)
    evaluation = json.loads(run_script("Evaluation.py", "--model_dir", model_dir,
                                       "--data_dir", data_dir, "--json").stdout)
    assert evaluation["step"] == 3  # 96 images / 16 per step x 0.5 epochs


def _worker(index, hosts, data_dir, model_dir, *extra):
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", data_dir,
         "--model_dir", model_dir, *CLUSTER_ARGS, "--worker_hosts", hosts,
         "--task_index", str(index), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)




@pytest.mark.slow
def test_two_workers_train_a_kill_ends_both_and_a_relaunch_resumes(colour_data, tmp_path):
    """Two train.py workers on 127.0.0.1 train the demo configuration and the
    chief writes checkpoints; worker 1 killed with SIGKILL ends the chief
    within 60 s with a line naming it; launched again, both resume from the
    last checkpoint and finish."""
    _, data_dir = colour_data
    model_dir = str(tmp_path / "models")
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    run = ("--epochs", "3", "--save_every_steps", "2")  # 6 steps an epoch at 2 x 8 images
    chief, other = (_worker(i, hosts, data_dir, model_dir, *run) for i in range(2))
    try:
        deadline = time.monotonic() + 240
        while not checkpoints.list_checkpoints(model_dir) and chief.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        other.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code, out, err = finish(chief, 60)
        assert time.monotonic() - killed_at < 60
    finally:
        for process in (chief, other):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert code != 0, out
    assert f"lost worker 1 ({hosts.split(',')[1]})" in err, err
    assert "Traceback" not in err
    saved = checkpoints.checkpoint_step(checkpoints.list_checkpoints(model_dir)[0])
    assert saved >= 2

    chief, other = (_worker(i, hosts, data_dir, model_dir, *run) for i in range(2))
    (code, out, err), (code1, out1, err1) = finish(chief, 240), finish(other, 60)
    assert code == 0 and code1 == 0, err + err1
    assert f"resuming from {os.path.join(model_dir, 'model.ckpt')}-" in out
    resumed = int(out.split("(step ")[1].split(")")[0])
    assert resumed >= saved and "resuming from" in out1
    assert "finished: step 18" in out and "finished at step 18" in out1
    assert checkpoints.checkpoint_step(checkpoints.list_checkpoints(model_dir)[0]) == 18


@pytest.mark.slow
def test_workers_that_disagree_all_stop_in_one_line_naming_the_difference(colour_data,
                                                                           tmp_path):
    """Different --batch_size on two workers once left both waiting in a
    collective forever: they compare their settings first and both stop."""
    _, data_dir = colour_data
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    workers = [_worker(0, hosts, data_dir, str(tmp_path / "models"), "--epochs", "1"),
               _worker(1, hosts, data_dir, str(tmp_path / "models"), "--epochs", "1",
                       "--batch_size", "4")]
    try:
        results = [finish(worker, 180) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for (code, out, err), here in zip(results, ("8", "4")):
        line = one_error_line(subprocess.CompletedProcess([], code, out, err))
        assert line.startswith("error: the workers differ in --batch_size (here "
                               f"{here}), the number of steps (--epochs)"), err
        assert "--model" not in line and "class list" not in line


@pytest.mark.slow
def test_sigterm_ends_a_worker_whose_step_waits_for_a_frozen_peer(colour_data, tmp_path):
    """A peer frozen mid-run (SIGSTOP: its sockets stay open, so it is not
    lost) leaves the chief's step waiting; SIGTERM ends the chief within the
    grace, in one line, where it was once ignored until SIGKILL."""
    _, data_dir = colour_data
    model_dir = str(tmp_path / "models")
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    run = ("--epochs", "50")
    chief, other = (_worker(i, hosts, data_dir, model_dir, *run) for i in range(2))
    try:
        deadline = time.monotonic() + 240
        while True:  # until the chief's progress lines show steps
            line = chief.stdout.readline()
            assert line and time.monotonic() < deadline, "no step within 240 s"
            if line.startswith("step "):
                break
        other.send_signal(signal.SIGSTOP)
        time.sleep(2)  # the chief is now in a step that cannot complete
        chief.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code, _, err = finish(chief, 60)
        waited = time.monotonic() - sent
    finally:
        for process in (chief, other):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.communicate()
    assert code == 128 + signal.SIGTERM, err
    assert waited < peer_watch.STOP_GRACE_SECS + 15
    assert "error: SIGTERM: this worker's step has waited" in err and "Traceback" not in err
