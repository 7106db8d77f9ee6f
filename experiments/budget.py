"""Pure planning of experiments: the flags that make each approach spend a budget.

The comparison gives every approach the same number of training examples; these
functions turn that budget into launcher and trainer flags for one entry of
cluster.approaches.VARIANTS. No processes, no TensorFlow.
"""

import dataclasses

from cluster import approaches


@dataclasses.dataclass(frozen=True)
class Budget:
  """How one approach spends the shared example budget."""
  approach: str          # launcher approach
  launcher_args: tuple[str, ...]
  trainer_args: tuple[str, ...]
  examples: int          # examples it will actually process (<= budget, rounding down)
  description: str


@dataclasses.dataclass(frozen=True)
class Target:
  """Time to accuracy: evaluate every `eval_every_examples` (FedAvg: every round) and
  record when test accuracy reaches `accuracy`; with `stop`, the run ends there and
  the budget is only its cap."""
  accuracy: float
  stop: bool = True
  eval_every_examples: int | None = None

  def trainer_args(self, per_round: bool) -> tuple[str, ...]:
    every = () if per_round or not self.eval_every_examples else (
        f"--eval_every_examples={self.eval_every_examples}",)
    return (f"--target_accuracy={self.accuracy:g}", *(("--stop_at_target",) if self.stop
                                                       else ()), *every)


@dataclasses.dataclass(frozen=True)
class FedAvgRecipe:
  """The suite's FedAvg defaults (McMahan et al.'s MNIST setting): K clients, C*K a
  round, E local epochs of batch B, client SGD at `client_learning_rate`. Written here
  once: the FedAvg row, its one-process baseline and the Flower peer read it."""
  num_clients: int = 100
  clients_per_round: int = 10
  local_epochs: int = 1
  local_batch_size: int = 10
  client_learning_rate: float = 0.1
  backend: str | None = None  # --fedavg_backend (None: the trainer's default)

  def examples_per_round(self, num_train: int) -> int:
    return self.clients_per_round * (num_train // self.num_clients) * self.local_epochs

  def trainer_args(self) -> tuple[str, ...]:
    return (f"--num_clients={self.num_clients}",
            f"--clients_per_round={self.clients_per_round}",
            f"--local_epochs={self.local_epochs}",
            f"--local_batch_size={self.local_batch_size}",
            f"--client_learning_rate={self.client_learning_rate:g}",
            *((f"--fedavg_backend={self.backend}",) if self.backend else ()))

  def plain_args(self) -> tuple[str, ...]:
    """The client work as one plain process trains: plain SGD at the client rate."""
    return ("--optimizer=sgd", f"--learning_rate={self.client_learning_rate:g}",
            "--lr_schedule=constant")


FEDAVG_DEFAULT = FedAvgRecipe()


def plan_budget(name: str, budget: int, num_train: int, num_workers: int, batch_size: int,
                fedavg: FedAvgRecipe = FEDAVG_DEFAULT,
                target: Target | None = None) -> Budget:
  """Pure: the flags that make variant `name` process `budget` examples (with a
  stopping `target`: at most that many); FedAvg variants follow `fedavg`."""
  variant = approaches.variant(name)
  plan = (_plan_rounds(variant, budget, num_train, num_workers, fedavg)
          if variant.approach is approaches.FEDAVG else
          _plan_steps(variant, budget, num_train, num_workers, batch_size))
  if target is None:
    return plan
  per_round = variant.approach is approaches.FEDAVG
  return dataclasses.replace(plan, trainer_args=plan.trainer_args +
                             target.trainer_args(per_round))


def _launcher_args(variant: approaches.Variant, num_workers: int) -> tuple[str, ...]:
  return (f"--num_workers={num_workers}",) + (
      ("--num_ps=1",) if variant.approach.has_ps else ())


def _plan_rounds(variant: approaches.Variant, budget: int, num_train: int, num_workers: int,
                 fedavg: FedAvgRecipe) -> Budget:
  per_round = fedavg.examples_per_round(num_train)
  rounds = max(1, budget // per_round)
  return Budget(variant.approach.name, _launcher_args(variant, num_workers),
                (f"--rounds={rounds}", *fedavg.trainer_args(), "--eval_every=1",
                 *variant.trainer_args),
                rounds * per_round, f"{rounds} rounds x {per_round} examples")


def _plan_steps(variant: approaches.Variant, budget: int, num_train: int, num_workers: int,
                batch_size: int) -> Budget:
  per_step = batch_size * (1 if variant.examples_per_step_is_per_worker else num_workers)
  steps = max(1, budget // per_step)
  epochs = max(1, min(steps, round(budget / num_train)))
  steps_per_epoch = max(1, steps // epochs)
  trainer = (f"--batch_size={batch_size}", f"--epochs={epochs}",
             f"--steps_per_epoch={steps_per_epoch}", *variant.trainer_args)
  return Budget(variant.approach.name, _launcher_args(variant, num_workers), trainer,
                epochs * steps_per_epoch * per_step,
                f"{epochs} epoch(s) x {steps_per_epoch} steps x {per_step} examples")


# McMahan et al. 2017, Table 2 (CNN, MNIST, C=0.1, B=10): rounds to reach 99 % test accuracy.
PAPER_MODEL = "fedavg_cnn"
PAPER_ROUNDS_TO_99 = {("iid", 5): 20, ("shards", 5): 229, ("iid", 1): 34, ("shards", 1): 350}


# The non-IID comparison: what each algorithm adds to the FedAvg settings' flags.
PAPER_ALGORITHMS = {
    approaches.FEDAVG.name: (),
    "fedprox": ("--algorithm=fedprox", "--proximal_strength=0.1"),
    "scaffold": ("--algorithm=scaffold",),
    "fedadam": ("--server_optimizer=adam", "--server_learning_rate=0.01"),
    "fedavgm": ("--server_optimizer=momentum", "--server_learning_rate=1.0"),
}


def paper_preset(max_rounds: int, client_learning_rate: float,
                 settings: tuple[str, ...] | None = None,
                 algorithms: tuple[str, ...] = (approaches.FEDAVG.name,)
                 ) -> list[tuple[str, list[str], int]]:
  """Pure: (run name, FedAvg trainer flags for PAPER_MODEL, the paper's rounds to 99 %)
  for each Table 2
  CNN setting (`settings`: e.g. ("iid_E5", "shards_E1"); None: all four) and each of
  `algorithms` (PAPER_ALGORITHMS); every run stops at 99 % or after `max_rounds`, and
  resumes from its own checkpoint when the preset is run again."""
  unknown = [a for a in algorithms if a not in PAPER_ALGORITHMS]
  if unknown:
    raise ValueError(f"--paper_algorithms: unknown {', '.join(unknown)}; valid: "
                     f"{', '.join(PAPER_ALGORITHMS)}")
  names = [f"{p}_E{e}" for p, e in PAPER_ROUNDS_TO_99]
  bad = [s for s in settings or () if s not in names]
  if bad:
    raise ValueError(f"--paper_settings: unknown {', '.join(bad)}; valid: {', '.join(names)}")
  runs = []
  for (partition, epochs), paper in PAPER_ROUNDS_TO_99.items():
    if settings and f"{partition}_E{epochs}" not in settings:
      continue
    for algorithm in algorithms:
      runs.append((f"{algorithm}_{partition}_E{epochs}", [
          f"--partition={partition}", *dataclasses.replace(
              FEDAVG_DEFAULT, local_epochs=epochs,
              client_learning_rate=client_learning_rate).trainer_args(),
          f"--rounds={max_rounds}", "--target_accuracy=0.99", "--stop_at_target", "--resume",
          *PAPER_ALGORITHMS[algorithm]], paper))
  return runs
