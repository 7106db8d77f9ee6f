"""TF's profiler over a job (trainers/common/profiling.py): the breakdown's arithmetic on
hand-made traces, and one parameter-server run traced through the launcher."""

import json

import pytest

from tests import helpers
from trainers.common import profiling

MS = 10 ** 9  # picoseconds in a millisecond


def test_op_kernel_events_are_told_apart_from_runtime_events():
  assert profiling.op_type("model/dense/MatMul:MatMul") == "MatMul"
  assert profiling.op_type("ExecutorState::Process") is None
  assert profiling.op_type("ReduceIterator::Root::Prefetch") is None
  assert profiling.classify("model/dense/MatMul:MatMul") == "compute"
  assert profiling.classify("edge_12_dense/kernel/read:_Recv") == "transfer"
  assert profiling.classify("ExecutorState::Process") == "runtime"
  assert profiling.classify("MemoryAllocation") is None
  # A thread blocked in the call of a function whose ops other threads run: not work.
  assert profiling.op_type("EagerLocalExecute: __inference_async_closure_1077") is None
  assert profiling.classify("EagerService:Enqueue") is None
  assert profiling.classify("KernelAndDeviceFunc::Run") is None


def test_the_innermost_event_owns_its_time_and_the_rest_is_idle():
  events = [(0, 10 * MS, "ExecutorState::Process"),   # 10 ms of executor...
            (1 * MS, 4 * MS, "d/MatMul:MatMul"),        # ...4 of them a kernel
            (6 * MS, 3 * MS, "w/read:_Recv"),           # ...3 waiting on another task
            (20 * MS, 5 * MS, "MemoryAllocation")]       # not classified: idle
  got = profiling.thread_breakdown(events, window_ps=40 * MS)
  assert got == {"compute": 4 * MS, "transfer": 3 * MS, "runtime": 3 * MS, "idle": 30 * MS}


def _space(lines):
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  space = xplane_pb2.XSpace()
  plane = space.planes.add(name="/host:CPU")
  ids = {}
  for line_name, events in lines.items():
    line = plane.lines.add(name=line_name)
    for start_ms, dur_ms, name in events:
      if name not in ids:
        ids[name] = len(ids) + 1
        plane.event_metadata[ids[name]].name = name
      line.events.add(metadata_id=ids[name], offset_ps=start_ms * MS, duration_ps=dur_ms * MS)
  return space


def test_a_trace_breaks_down_over_compute_threads_only():
  space = _space({
      "tf_Compute/1": [(0, 8, "ExecutorState::Process"), (0, 6, "c/Conv2D:Conv2D")],
      "tf_Compute/2": [(10, 10, "ExecutorState::Process"), (12, 8, "v/read:_Recv")],
      "python": [(0, 9, "TFE_Py_ExecuteCancelable"), (10, 9, "TFE_Py_ExecuteCancelable")],
  })
  got = profiling.breakdown(space)
  assert got["window_ms"] == 20 and got["threads"] == 2
  assert got["compute"] == 6 and got["transfer"] == 8 and got["runtime"] == 4
  assert got["idle"] == 20 + 20 - 18
  assert got["top_ops_ms"] == {"_Recv": 8, "Conv2D": 6}
  assert got["remote_call"] == 18 and got["remote_calls"] == 2  # the coordinator's side
  per = profiling.per_step({"worker:0": got, "ps:0": {"error": "x"}}, steps=4)
  assert per["worker:0"]["compute"] == 1.5 and per["worker:0"]["wall"] == 5
  assert per["ps:0"] == {"error": "x"}


def test_steps_in_the_window_are_interpolated_from_the_chiefs_points():
  points = [(0.0, 0), (1.0, 100), (3.0, 300)]
  assert profiling.steps_between(points, 0.5, 2.5) == pytest.approx(200)
  assert profiling.steps_between(points, 2.0, 4.0) == 0.0  # not covered: no guess


@pytest.mark.multiprocess
def test_a_parameter_server_run_traces_every_task(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--approach=ps", "--num_workers=1", f"--run_dir={tmp_path}", "--timeout=240", "--",
       "--dataset=synthetic", "--synthetic_examples=4096", "--batch_size=32", "--log_every=4",
       "--steps_per_epoch=128", "--epochs=4", "--steps_per_closure=4", "--profile_ms=1000",
       "--profile_at_step=16"], timeout_s=300)
  assert code == 0, out[-3000:]
  found = json.loads((tmp_path / "profile" / "breakdown.json").read_text())
  assert set(found["tasks"]) == {"chief:0", "worker:0", "ps:0"}
  assert found["steps_in_window"] > 0
  worker = found["tasks"]["worker:0"]
  assert "error" not in worker, worker
  assert worker["compute"] > 0 and worker["transfer"] > 0  # it computes and pulls from ps
  assert any(op in worker["top_ops_ms"] for op in ("MatMul", "_MklMatMul", "_MklNativeFusedMatMul",
                                                   "_FusedMatMul"))
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["profile"]["per_step_ms"]["worker:0"]["compute"] > 0
  assert summary["profile"]["per_step_ms"]["chief:0"]["remote_call"] > 0
  assert "profile worker:0: compute" in out
