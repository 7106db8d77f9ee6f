"""The machine line every report and benchmark carries: seconds do not travel between
machines, so each figure says where it was measured (CPU model, cores, ISA, whether
TF's oneDNN kernels were on in the trainers and in TFF's services).

Parsing is pure (`isa`, `Machine.line`); `this_machine()` reads /proc/cpuinfo and asks
TensorFlow, in a child process (the caller stays TF-free), whether oneDNN is on with
the environment the launcher's tasks get.
"""

import dataclasses
import os
import platform
import subprocess
import sys

# The instruction sets that decide TF's CPU kernels (oneDNN turns itself on by default
# only where AVX-512 VNNI/BF16 or AMX are present: off on AVX2-only AMD EPYC).
ISA_FLAGS = (("amx_tile", "AMX"), ("avx512_bf16", "AVX512-BF16"),
             ("avx512_vnni", "AVX512-VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
# TFF 0.87's prebuilt worker_binary runs without oneDNN whatever the environment says
# (measured: BENCHMARKS.md, issue 23).
TFF_SERVICES_ONEDNN = False


def isa(cpuinfo: str) -> list[str]:
  """The ISA names present in /proc/cpuinfo's flags, widest first."""
  line = next((l for l in cpuinfo.splitlines() if l.startswith("flags")), "")
  present = set(line.split(":", 1)[-1].split())
  return [name for flag, name in ISA_FLAGS if flag in present]


@dataclasses.dataclass(frozen=True)
class Machine:
  cpu: str
  cores: int
  isa: tuple[str, ...]
  onednn_trainers: bool | None   # None: unknown (TF could not be asked)
  onednn_tff_services: bool = TFF_SERVICES_ONEDNN
  matmul_gflops: float | None = None

  def line(self) -> str:
    onednn = {True: "on", False: "off", None: "unknown"}
    return (f"{self.cpu}, {self.cores} core(s), {'/'.join(self.isa) or 'no AVX'}; oneDNN "
            f"{onednn[self.onednn_trainers]} in the trainers, "
            f"{onednn[self.onednn_tff_services]} in TFF's services"
            + (f"; matmul {self.matmul_gflops:.0f} GFLOP/s" if self.matmul_gflops else ""))


def onednn_on(env: dict | None = None) -> bool | None:
  """Whether TF's oneDNN kernels are on for a process with `env` (a child asks TF)."""
  code = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
          "from tensorflow.python.util import _pywrap_util_port as p\n"
          "print(int(p.IsMklEnabled()))")
  try:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **(env or {})})
    return bool(int(out.stdout.strip().splitlines()[-1]))
  except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
    return None


def this_machine(matmul_gflops: float | None = None, ask_tf: bool = True) -> Machine:
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    info = ""
  model = next((l.split(":", 1)[1].strip() for l in info.splitlines()
                if l.startswith("model name")), platform.processor() or "unknown CPU")
  return Machine(model, len(os.sched_getaffinity(0)), tuple(isa(info)),
                 onednn_on() if ask_tf else None, matmul_gflops=matmul_gflops)
