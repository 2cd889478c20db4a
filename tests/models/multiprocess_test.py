"""A greedy fit launched as two processes on this machine.

Each test starts its processes (`multiprocess_worker.py`) on free ports of
127.0.0.1, with one CPU device each, and compares them with the same fit
in one process on the same global batches. Every child is killed when a
test fails or times out.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pytest

from keras_dib.models.checkpointing import FILENAME
from keras_dib.testing import TestCase
from tests.models import multiprocess_worker

pytestmark = pytest.mark.large

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(WORKER)))
TIMEOUT = 100
GRACE = 15

# Keras' own failure under `tf.distribute.MultiWorkerMirroredStrategy`:
# before training, its TensorFlow trainer averages the first batch across
# the workers with `strategy.reduce`, which this strategy cannot do for a
# nested batch (a plain `keras.Sequential` fails alike).
KERAS_MULTI_WORKER_ERROR = "with an unsupported type (<class 'tensorflow."
KERAS_MULTI_WORKER_FRAME = "_maybe_symbolic_build"


def _free_ports(count):
    """`count` distinct ports of 127.0.0.1 free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _environment(engine):
    environment = dict(os.environ)
    environment.pop("TF_CONFIG", None)
    environment["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in [environment.get("PYTHONPATH")] if p]
    )
    if engine == "jax":
        flags = [
            flag
            for flag in environment.get("XLA_FLAGS", "").split()
            if "xla_force_host_platform_device_count" not in flag
        ]
        environment.update(
            KERAS_BACKEND="jax",
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=" ".join(
                flags + ["--xla_force_host_platform_device_count=1"]
            ),
        )
    else:
        environment.update(
            KERAS_BACKEND="tensorflow",
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
    return environment


def _wait(children):
    """Waits until every child has ended, `TIMEOUT` seconds have passed,
    or `GRACE` seconds after a child failed (the others may wait for it
    in a collective forever)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        statuses = [child.poll() for child in children]
        if all(status is not None for status in statuses):
            return
        if any(status not in (None, 0) for status in statuses):
            deadline = min(deadline, time.monotonic() + GRACE)
        time.sleep(0.2)


def _launch(engine, num_processes, prefix, checkpoint_dir="", stop_at=None):
    """Runs the worker as `num_processes` processes at once; returns
    `[(status, output)]` in process order (status `"timeout"` for a child
    still running at the end). Kills every child still alive at the end
    (after a timeout, a failed sibling or an error)."""
    ports = ",".join(str(p) for p in _free_ports(max(num_processes, 1)))
    children = []
    try:
        for process_id in range(num_processes):
            command = [
                sys.executable,
                WORKER,
                engine,
                str(process_id),
                str(num_processes),
                ports,
                prefix,
                checkpoint_dir,
            ]
            if stop_at:
                command.append(stop_at)
            log = tempfile.TemporaryFile(mode="w+")
            child = subprocess.Popen(
                command,
                env=_environment(engine),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            children.append((child, log))
        _wait([child for child, _ in children])
        results = []
        for child, log in children:
            status = child.poll()
            log.seek(0)
            results.append(
                ("timeout" if status is None else status, log.read())
            )
        return results
    finally:
        for child, log in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            log.close()


def _check_statuses(test, results, expected=0):
    for process_id, (status, output) in enumerate(results):
        test.assertEqual(
            status,
            expected,
            f"process {process_id} ended with {status}:\n{output[-4000:]}",
        )


def _check_chief(test, results):
    """Process 0 alone is the chief, the one writing checkpoints."""
    for process_id, (_, output) in enumerate(results):
        test.assertIn(f"chief: {process_id == 0}", output)


def _load(prefix, process_id=0):
    with np.load(f"{prefix}-{process_id}.npz") as archive:
        weights = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    with open(f"{prefix}-{process_id}.json") as file:
        return weights, json.load(file)


def _assert_same_fit(test, prefix, reference, keys):
    """Every process of `prefix` ends with the weights and History of the
    one-process `reference`."""
    expected_weights, expected = _load(reference)
    for process_id in range(2):
        weights, record = _load(prefix, process_id)
        test.assertEqual(len(weights), len(expected_weights))
        for actual, wanted in zip(weights, expected_weights):
            np.testing.assert_allclose(actual, wanted, atol=1e-4, rtol=1e-4)
        test.assertEqual(record["history"]["block"], [0, 1, 1, 4])
        for key in keys:
            np.testing.assert_allclose(
                record["history"][key],
                expected["history"][key],
                atol=1e-5,
                rtol=1e-5,
                err_msg=key,
            )
    test.assertTrue(any(not np.allclose(w, 0.0) for w in weights))


class JaxMultiProcessTest(TestCase):
    def setUp(self):
        super().setUp()
        if keras.backend.backend() != "jax":
            pytest.skip("keras.distribution.initialize runs on JAX")

    def test_checkpointed_fit_on_two_processes_matches_one(self):
        # One scenario covers both claims (each launch of JAX processes
        # costs seconds of start-up and compilation): two processes fit
        # with a checkpoint, are stopped, resume, and end with the weights
        # and History of the same fit uninterrupted in one process.
        folder = self.get_temp_dir()
        checkpoint_dir = os.path.join(folder, "checkpoint")
        prefix = os.path.join(folder, "two")
        reference = os.path.join(folder, "one")
        # Both processes stop as block 1 begins its second epoch...
        stopped = _launch("jax", 2, prefix, checkpoint_dir, stop_at="1:1")
        _check_statuses(self, stopped, expected=multiprocess_worker.STOPPED)
        _check_chief(self, stopped)
        self.assertEqual(os.listdir(checkpoint_dir), [FILENAME])
        self.assertFalse(os.path.exists(f"{prefix}-0.json"))
        # ...and a new launch resumes there, process 0 writing alone.
        resumed = _launch("jax", 2, prefix, checkpoint_dir)
        _check_statuses(self, resumed)
        _check_chief(self, resumed)
        self.assertEqual(os.listdir(checkpoint_dir), [FILENAME])
        for process_id, writes in ((0, 2), (1, 0)):
            record = _load(prefix, process_id)[1]
            self.assertEqual(record["begun"], [[1, 1], [4, 0]])
            self.assertEqual(record["checkpoint_writes"], writes)
        _check_statuses(self, _launch("jax", 1, reference))
        keys = ("loss", "cross_entropy", "compression")
        _assert_same_fit(self, prefix, reference, keys)
        # The DIB Gram matrices are the global batch's: the term jitted on
        # the batch sharded over the processes is the whole batch's, not
        # the mean over the processes' shares (a different estimate).
        for process_id in range(2):
            gram = _load(prefix, process_id)[1]["gram"]
            self.assertAllClose(gram["sharded"], gram["full"], atol=1e-5)
            self.assertGreater(abs(gram["full"] - gram["halves"]), 1e-2)
        # `predict` of several JAX processes: Keras gathers the outputs
        # with NumPy, which cannot read the other process' shard (the
        # weights compared above give the one-process predictions).
        expected = np.asarray(_load(reference)[1]["predictions"])
        for process_id in range(2):
            record = _load(prefix, process_id)[1]
            if "predictions" in record:
                np.testing.assert_allclose(
                    record["predictions"],
                    multiprocess_worker._local_share(expected, process_id, 2),
                    atol=1e-4,
                    rtol=1e-4,
                )
            else:
                self.assertIn("non-addressable", record["predict_error"])


def _failed_in_keras(results):
    """Whether every process failed with Keras' multi-worker error."""
    return all(
        status != 0
        and KERAS_MULTI_WORKER_ERROR in output
        and KERAS_MULTI_WORKER_FRAME in output
        for status, output in results
    )


class TensorFlowMultiWorkerTest(TestCase):
    def setUp(self):
        super().setUp()
        if keras.backend.backend() != "tensorflow":
            pytest.skip("tf.distribute runs on TensorFlow")

    def test_greedy_fit_on_two_workers_matches_one(self):
        # MultiWorkerMirroredStrategy over 2 workers (TF_CONFIG), the model
        # built and compiled in its scope. As in distribution_test.py's
        # MirroredStrategy test, no batch normalization and no Gram-matrix
        # term (beta=0): each replica would have its own batch statistics
        # and Gram matrices, other estimators than the full batch's.
        folder = self.get_temp_dir()
        prefix = os.path.join(folder, "two")
        reference = os.path.join(folder, "one")
        # A plain keras.Sequential first: while Keras itself cannot fit
        # under this strategy, the greedy fit is not launched (four
        # TensorFlow processes would start to end in the same error).
        if _failed_in_keras(_launch("tensorflow-plain", 2, prefix)):
            pytest.skip(
                f"Keras {keras.version()} cannot fit a plain "
                "keras.Sequential under "
                "tf.distribute.MultiWorkerMirroredStrategy: before "
                "training, its TensorFlow trainer "
                "(_maybe_symbolic_build) averages the first batch with "
                "strategy.reduce, which fails on a nested batch "
                "(ValueError: Attempt to convert a value (PerReplica...) "
                "with an unsupported type); the greedy fit goes through "
                "the same trainer"
            )
        results = _launch("tensorflow", 2, prefix)
        _check_chief(self, results)
        _check_statuses(self, results)
        _check_statuses(self, _launch("tensorflow", 1, reference))
        _assert_same_fit(self, prefix, reference, ("loss",))
