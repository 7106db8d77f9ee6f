"""TF's profiler over a job (trainers/common/profiling.py): the breakdown's arithmetic on
hand-made traces, a self-tracing worker's window, and a parameter-server run and an
all-reduce run traced through the launcher."""

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


def test_collectives_in_flight_are_an_interval_union_and_launches_are_counted():
  assert profiling.union_ps([(0, 4), (2, 6), (10, 12), (11, 11)]) == 8
  assert profiling.union_ps([]) == 0
  assert profiling.is_collective("while/CollectiveReduceV2:CollectiveReduceV2")
  assert profiling.is_collective("allreduce/NcclAllReduce:NcclAllReduce")
  assert not profiling.is_collective("BaseCollectiveExecutor::ExecuteAsync")
  space = _space({
      # The compute thread launches two all-reduces (short kernels)...
      "tf_Compute/1": [(0, 10, "ExecutorState::Process"), (0, 5, "d/MatMul:MatMul"),
                       (5, 1, "CollectiveReduceV2:CollectiveReduceV2"),
                       (7, 1, "div_no_nan/CollectiveReduceV2:CollectiveReduceV2")],
      # ...which run to completion on TF's collective threads, overlapping.
      "collective_ops/1": [(5, 6, "CollectiveReduceV2:CollectiveReduceV2"), (5, 6, "Loop")],
      "collective_ops/2": [(7, 6, "div_no_nan/CollectiveReduceV2:CollectiveReduceV2")],
  })
  got = profiling.breakdown(space)
  assert got["collective"] == 8 and got["collectives"] == 2  # 5..13 in flight
  assert got["threads"] == 1 and got["compute"] == 5 + 2  # a launch is a kernel too
  per = profiling.per_step({"worker:0": got}, steps=2)["worker:0"]
  assert per["collective"] == 4 and per["collectives"] == 1


def test_a_self_traced_window_opens_and_closes_at_the_steps_it_is_shown():
  now, calls = [0.0], []
  window = profiling.LocalWindow("/nowhere", ms=1000, at_step=20, clock=lambda: now[0],
                                 start=lambda d: calls.append(("start", d)),
                                 stop=lambda: calls.append(("stop",)))
  for step, t in [(10, 0.0), (20, 1.0), (30, 1.5), (40, 2.1), (50, 3.0)]:
    now[0] = t
    window.observe(step)
  assert calls == [("start", "/nowhere"), ("stop",)]
  assert window.opened == (1.0, 20) and window.closed_at_step == 40
  # A run that ends before the window opens says so, and traces nothing.
  early = profiling.LocalWindow("/nowhere", ms=1000, at_step=500, start=calls.append,
                                stop=calls.append)
  early.observe(100)
  result, steps = early.finish()
  assert steps == 0 and "--profile_at_step" in result["error"]
  assert len(calls) == 2


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


@pytest.mark.multiprocess
def test_an_all_reduce_worker_traces_itself_and_launches_one_collective_a_step(tmp_path):
  """Each all-reduce worker traces the same steps; a step launches one collective (the
  gradients' pack): Keras' own train step also all-reduced every metric's total and count
  at every step (5 collectives a step for loss and accuracy), trainer.local_metrics_train_step
  keeps the step's logs on the replica."""
  code, out, _ = helpers.run_launcher(
      ["--approach=allreduce", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=240",
       "--", "--dataset=synthetic", "--synthetic_examples=4096", "--batch_size=32",
       "--log_every=16", "--epochs=2", "--steps_per_execution=4", "--profile_ms=800",
       "--profile_at_step=16"], timeout_s=300)
  assert code == 0, out[-3000:]
  for task in ("worker_0", "worker_1"):
    found = json.loads((tmp_path / "profile" / f"breakdown-{task}.json").read_text())
    (name, per), = found["per_step_ms"].items()
    assert name == task.replace("_", ":") and "error" not in per, per
    assert found["steps_in_window"] > 0 and found["steps_in_window"] % 4 == 0
    assert per["compute"] > 0 and per["collective"] > 0
    assert per["collectives"] == pytest.approx(1.0, abs=0.3), per
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["profile"]["per_step_ms"]["worker:0"]["collectives"] == pytest.approx(1, abs=0.3)
  assert "profile worker:1: compute" in out and "profile worker:0: compute" in out
