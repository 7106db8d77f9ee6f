"""ServicePool: TFF 0.87's mergeable-computation context (mergeable_comp_execution_
context.py), changed in the two places where it cost this suite bytes and ownership.

TFF's context splits a round's clients into equal runs over its contexts, runs
`up_to_merge` on each, then `merge` of two partial results on a service and
`after_merge` on the service that merged, with the first service's whole argument
again. Here:
- each service gets exactly the clients it owns: the caller names the group sizes
  (`with pool.groups([n0, n1, ...])`; clients.by_service orders them), a service
  with no client this round is not called;
- only `up_to_merge` runs on the services; `merge` and `after_merge` run on the
  chief's own service (`local`), as does every computation with nothing placed at the
  clients (initialize, get_model_weights).
So a service receives the round's state and its clients' names and sends its
partial aggregate: the algorithm's traffic, once.
"""

import asyncio
import contextlib
from typing import Sequence

from tensorflow_federated.python.common_libs import async_utils, structure
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline
from tensorflow_federated.python.core.impl.execution_contexts import (
    mergeable_comp_execution_context as mergeable)
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions


def _at_clients(type_spec) -> bool:
  return type_spec is not None and type_analysis.contains(
      type_spec, lambda t: isinstance(t, computation_types.FederatedType) and
      t.placement is placements.CLIENTS)


def split(value, type_spec, sizes: Sequence[int]) -> list:
  """`value` cut into len(sizes) arguments: every CLIENTS-placed list in consecutive
  runs of `sizes`, everything else repeated."""
  if isinstance(type_spec, computation_types.StructType):
    elements = structure.iter_elements(structure.from_container(value))
    parts = [split(v, t, sizes) for (_, v), (_, t) in
             zip(elements, structure.iter_elements(type_spec))]
    names = [n for n, _ in structure.iter_elements(type_spec)]
    return [structure.Struct(list(zip(names, [p[i] for p in parts])))
            for i in range(len(sizes))]
  if (isinstance(type_spec, computation_types.FederatedType) and
      type_spec.placement is placements.CLIENTS and not type_spec.all_equal):
    if len(value) != sum(sizes):
      raise ValueError(f"{len(value)} client values for groups of {list(sizes)}")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [list(value[s:s + n]) for s, n in zip(starts, sizes)]
  return [value] * len(sizes)


class ServicePool(context_base.SyncContext):
  """Runs TFF computations over executor services (one async context each) and the
  chief's own service (`local`); see the module docstring."""

  def __init__(self, services: Sequence[context_base.AsyncContext],
               local: context_base.AsyncContext):
    self._services, self._local = list(services), local
    self._runner = async_utils.AsyncThreadRunner()
    self._compiler = compiler_pipeline.CompilerPipeline(
        mergeable_comp_compiler.compile_to_mergeable_comp_form)
    self._sizes: list[int] | None = None

  @contextlib.contextmanager
  def groups(self, sizes: Sequence[int]):
    """The next calls' clients arrive service by service, `sizes[i]` for service i."""
    if len(sizes) != len(self._services):
      raise ValueError(f"{len(sizes)} groups for {len(self._services)} services")
    self._sizes = list(sizes)
    try:
      yield
    finally:
      self._sizes = None

  def invoke(self, comp, arg=None):
    if not _at_clients(comp.type_signature.parameter):
      return self._runner.run_coro_and_return_result(self._local.invoke(comp, arg))
    if self._sizes is None:
      raise ValueError("a computation with clients needs pool.groups(...) around it")
    form = self._compiler.compile(comp)
    result_type = form.after_merge.type_signature.result
    result = self._runner.run_coro_and_return_result(self._run(form, arg))
    return type_conversions.type_to_py_container(result, result_type)

  async def _run(self, form, arg):
    busy = [i for i, n in enumerate(self._sizes) if n]
    args = split(arg, form.up_to_merge.type_signature.parameter,
                 [self._sizes[i] for i in busy])
    partials = await asyncio.gather(*[
        self._services[i].invoke(form.up_to_merge, a) for i, a in zip(busy, args)])
    merged = partials[0]
    for partial in partials[1:]:
      merged = await mergeable._merge_results(form, merged, partial, self._local)  # pylint: disable=protected-access
    if type_analysis.contains_only(
        form.after_merge.type_signature.result,
        lambda t: not isinstance(t, computation_types.FederatedType) or t.all_equal):
      return await mergeable._compute_after_merged(form, args[0], merged, self._local)  # pylint: disable=protected-access
    outs = [await mergeable._compute_after_merged(form, a, merged, self._local)  # pylint: disable=protected-access
            for a in args]
    return mergeable._repackage_partitioned_values(  # pylint: disable=protected-access
        outs, result_type_spec=form.after_merge.type_signature.result)
