"""Data-parallel training (distribute.py, train.py): the plan from flags and
TF_CONFIG, the data shares, a 2-replica step against one device, and real
clusters of train.py processes on 127.0.0.1, a worker killed among them."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import FlowIO
import distribute
import hardware
import modeldir
import train
from cli import UserError
from conftest import REPO, free_ports, make_colour_images, run_script

# The cluster tests' demo run: layer_14 at 32 px, a few steps.
CLUSTER_ARGS = ("--model", "layer_14", "--image_size", "32", "--batch_size", "8",
                "--seed", "1", "--log_every_steps", "1", "--eval_every_epochs", "0")


def plan_of(argv, environ=None):
    return distribute.plan(train.parse_args(argv), environ or {})


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------
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
])
def test_a_wrong_cluster_or_device_count_is_one_line(argv, environ, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        plan_of(argv, environ)


# ---------------------------------------------------------------------------
# Faults, as functions
# ---------------------------------------------------------------------------
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


def test_peer_watch_names_a_peer_unreachable_during_a_run():
    port, = free_ports(1)  # nothing listens there
    plan = plan_of(["--worker_hosts", f"127.0.0.1:{port},127.0.0.1:1", "--task_index", "1"])
    lost = []
    watch = distribute.PeerWatch(plan, lost_after=0.6, probe_every=0.2,
                                 on_lost=lambda name, seconds: lost.append(name))
    try:
        time.sleep(1.0)
        assert not lost  # between runs nothing is probed
        with watch.running():
            deadline = time.monotonic() + 10
            while not lost and time.monotonic() < deadline:
                time.sleep(0.1)
        assert lost == [f"worker 0 (127.0.0.1:{port})"]
    finally:
        watch.stop()


def test_a_peer_that_never_starts_is_one_line_after_the_timeout():
    mine, absent = free_ports(2)
    plan = plan_of(["--worker_hosts", f"127.0.0.1:{mine},127.0.0.1:{absent}",
                    "--task_index", "0", "--startup_timeout", "1.5"])
    said = []
    start = time.monotonic()
    with pytest.raises(UserError, match=f"worker 1 at 127.0.0.1:{absent} did not start "
                                        f"within 1.5 s"):
        distribute.start_server(plan, tf.compat.v1.ConfigProto(),
                                log=lambda *a, **k: said.append(a[0]))
    assert time.monotonic() - start < 10
    assert said and said[0].startswith(f"waiting for worker 1 at 127.0.0.1:{absent}")


# ---------------------------------------------------------------------------
# The data shares
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """24 colour images, 2 training shards: FlowIO's output, made in-process."""
    root = tmp_path_factory.mktemp("distributed")
    image_dir = make_colour_images(str(root / "images"), per_class=8)
    data_dir = str(root / "tfrecords")
    FlowIO.convert(image_dir, data_dir, validation_ratio=0.25, num_shards=2, workers=1)
    return data_dir


def _filenames(data_dir, shard):
    with tf.Graph().as_default():
        dataset = FlowIO.make_dataset(data_dir, "train", 32, 1, training=False, shard=shard)
        batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        names = []
        with tf.compat.v1.Session() as session:
            while True:
                try:
                    names.extend(session.run(batch[2]))
                except tf.errors.OutOfRangeError:
                    return names


@pytest.mark.parametrize("readers", [2, 3])  # by file (2 shards), by record (3 > 2 shards)
def test_readers_shares_are_disjoint_and_cover_the_split(small_data, readers):
    everything = _filenames(small_data, None)
    shares = [_filenames(small_data, (i, readers)) for i in range(readers)]
    assert sorted(sum(shares, [])) == sorted(everything)
    assert all(abs(len(share) - len(everything) / readers) <= 1 for share in shares)


# ---------------------------------------------------------------------------
# Two replicas against one device
# ---------------------------------------------------------------------------
def _variables(session):
    return {v.op.name: value for v, value in zip(
        tf.compat.v1.global_variables(), session.run(tf.compat.v1.global_variables()))}


@pytest.mark.slow  # trains: three small graphs built and stepped in this process
def test_two_replicas_step_is_one_devices_on_each_half_averaged(small_data, tmp_path):
    """One step of 2 replicas on 2 logical CPUs, per-replica batch 4, against
    one device stepped from the same weights on images 0-3 (A) and 4-7 (B).
    With plain SGD momentum the first update is -lr x gradient, so the
    replicas' weights must be (A + B) / 2: their gradients averaged. Batch
    norm uses each replica's own batch statistics, so the reference is
    "each half on one device", not the 8 images at once; the moving
    statistics are the first replica's, so they must equal A's."""
    args = train.parse_args(["--data_dir", small_data, "--model_dir", str(tmp_path),
                             "--model", "layer_14", "--image_size", "32", "--batch_size", "4",
                             "--stem", "imagenet",  # the larger last stage this test was sized for
                             "--seed", "3", "--learning_rate", "0.5",
                             "--weight_decay", "0.05"])  # L2 as large as the rest
    info = FlowIO.load_dataset_info(small_data)
    config, _ = train.resolve_config(args, info, str(tmp_path))
    start = str(tmp_path / "start")
    fp32 = hardware.choose_precision("fp32")  # exact comparisons need the same arithmetic

    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(args.seed)
        ops = train.build_training_graph(args, config, info, 4, 40, fp32)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(config=hardware.session_config(False, fp32)) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, start, write_meta_graph=False)
            steps = []
            for _ in range(2):  # A, then B from the same start
                saver.restore(session, start)
                session.run(ops["train_op"])
                steps.append(_variables(session))
    a, b = steps

    plan = distribute.Plan(["/cpu:0", "/cpu:1"], logical_cpus=2)
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(args.seed)
        strategy = distribute.make_strategy(plan)
        ops = train.build_replicated_training_graph(args, config, info, 4, 40, strategy, fp32)
        saver = tf.compat.v1.train.Saver()
        config_proto = distribute.session_config(plan, strategy,
                                                 hardware.session_config(False, fp32))
        with tf.compat.v1.Session(config=config_proto) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(ops["initializers"])
            saver.restore(session, start)  # the single-device names
            session.run(ops["train_op"])
            both = _variables(session)
            saved = saver.save(session, str(tmp_path / "model.ckpt"), global_step=1,
                               write_meta_graph=False)

    assert set(both) == set(a)
    assert both["global_step"] == 1
    trained = [name for name in a if name != "global_step" and "moving_" not in name]
    assert len(trained) > 50  # weights, batch-norm scales and offsets, momentum slots
    for name in trained:
        expected = (a[name] + b[name]) / 2
        scale = np.abs(expected).max()
        # float32 gradients summed in another order, with other threads: within
        # 1e-4 of each tensor's largest value (seen: 2e-5, on the momentum
        # slots, which hold the gradient); the halves' own steps differ by
        # more than 1e-3 of it (seen: 4e-3 at least), so A or B alone fails.
        assert np.abs(both[name] - expected).max() <= 1e-4 * scale, name
        assert np.abs(a[name] - b[name]).max() > 1e-3 * scale, name
    for name in (n for n in a if "moving_" in n):  # the first replica's, A's (seen: equal)
        scale = np.abs(a[name]).max()
        assert np.abs(both[name] - a[name]).max() <= 1e-4 * scale, name
        assert np.abs(b[name] - a[name]).max() > 1e-3 * scale, name

    # The checkpoint loads into the evaluation network, as Evaluation.py loads it.
    with tf.Graph().as_default():
        images = tf.zeros([1, 32, 32, 3])
        modeldir.build_network(images, config, is_train=False)
        with tf.compat.v1.Session() as session:
            modeldir.restore(session, saved)


# ---------------------------------------------------------------------------
# train.py processes
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_two_cpu_replicas_train_and_evaluation_loads_them(colour_data, tmp_path):
    _, data_dir = colour_data
    model_dir = str(tmp_path / "models")
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir,
                        *CLUSTER_ARGS, "--num_cpu_replicas", "2", "--epochs", "0.5",
                        timeout=300)
    assert "2 CPU replicas; global batch 16 (8 per replica)" in result.stdout
    manifest = modeldir.load_manifest(model_dir)
    training = manifest["training"]
    assert (training["replicas"], training["global_batch_size"]) == (2, 16)
    # the linear scaling rule on the global batch
    assert training["learning_rate"] == pytest.approx(
        train.BASE_LEARNING_RATE[manifest["stem"]] * 16 / 256)
    evaluation = json.loads(run_script("Evaluation.py", "--model_dir", model_dir,
                                       "--data_dir", data_dir, "--json").stdout)
    assert evaluation["step"] == 3  # 96 images / 16 per step x 0.5 epochs


def _worker(index, hosts, data_dir, model_dir, *extra):
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", data_dir,
         "--model_dir", model_dir, *CLUSTER_ARGS, "--worker_hosts", hosts,
         "--task_index", str(index), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process, timeout):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"still running after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return process.returncode, out, err


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
        while not modeldir.list_checkpoints(model_dir) and chief.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        other.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code, out, err = _finish(chief, 60)
        assert time.monotonic() - killed_at < 60
    finally:
        for process in (chief, other):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert code != 0, out
    assert f"lost worker 1 ({hosts.split(',')[1]})" in err, err
    assert "Traceback" not in err
    saved = modeldir.checkpoint_step(modeldir.list_checkpoints(model_dir)[0])
    assert saved >= 2

    chief, other = (_worker(i, hosts, data_dir, model_dir, *run) for i in range(2))
    (code, out, err), (code1, out1, err1) = _finish(chief, 240), _finish(other, 60)
    assert code == 0 and code1 == 0, err + err1
    assert f"resuming from {os.path.join(model_dir, 'model.ckpt')}-" in out
    resumed = int(out.split("(step ")[1].split(")")[0])
    assert resumed >= saved and "resuming from" in out1
    assert "finished: step 18" in out and "finished at step 18" in out1
    assert modeldir.checkpoint_step(modeldir.list_checkpoints(model_dir)[0]) == 18


@pytest.mark.slow
def test_evaluation_watch_evaluates_each_new_checkpoint(colour_data, trained_model, tmp_path):
    """Evaluation.py --watch on a model folder: the newest checkpoint at once,
    then one that appears later (as train.py would write it), then it stops
    after --watch_timeout seconds without another."""
    model_dir = str(tmp_path / "models")
    os.makedirs(model_dir)
    newest = modeldir.list_checkpoints(trained_model)[0]
    for name in ("model.json", "labels.txt"):
        shutil.copy(os.path.join(trained_model, name), model_dir)

    def publish(step):  # data first, the .index last, as the Saver renames them
        for suffix in (".data-00000-of-00001", ".index"):
            shutil.copy(newest + suffix, os.path.join(model_dir, f"model.ckpt-{step}{suffix}"))

    publish(10)
    watch = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "Evaluation.py"), "--watch", "--watch_timeout", "6",
         "--model_dir", model_dir, "--data_dir", colour_data[1], "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(watch.stdout.readline())
        publish(20)
        second = json.loads(watch.stdout.readline())
        code, out, err = _finish(watch, 60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
    assert (first["step"], second["step"]) == (10, 20)
    assert first["top1"] == second["top1"] > 0.8  # the same weights
    assert code == 0 and out == "" and "stopped watching" in err
    assert any(name.startswith("events.") for name in os.listdir(os.path.join(model_dir, "eval")))
