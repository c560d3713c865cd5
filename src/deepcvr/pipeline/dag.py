"""Task graphs: `graph[task]` is the list of tasks it needs (stdlib graphlib underneath)."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping

Graph = Mapping[str, Iterable[str]]


def sorter(graph: Graph) -> graphlib.TopologicalSorter[str]:
    return graphlib.TopologicalSorter({task: set(needs) for task, needs in graph.items()})


def find_cycle(graph: Graph) -> list[str] | None:
    """A dependency cycle as `[a, b, ..., a]` where each task needs the next, or None."""
    try:
        sorter(graph).prepare()
    except graphlib.CycleError as e:
        # graphlib lists the cycle in "is needed by" order; reverse it to read as "needs".
        return list(reversed(e.args[1]))
    return None


def topological_order(graph: Graph) -> list[str]:
    """Tasks in an order where every task comes after the tasks it needs (stable by name)."""
    ts = sorter(graph)
    ts.prepare()
    order: list[str] = []
    while ts.is_active():
        ready = sorted(ts.get_ready())
        order.extend(ready)
        ts.done(*ready)
    return order


def dependants(graph: Graph, task: str) -> set[str]:
    """Every task that needs `task`, directly or transitively (not `task` itself)."""
    children: dict[str, set[str]] = {}
    for name, needs in graph.items():
        for need in needs:
            children.setdefault(need, set()).add(name)
    found: set[str] = set()
    stack = [task]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def ancestors(graph: Graph, task: str) -> set[str]:
    """Every task that `task` needs, directly or transitively."""
    found: set[str] = set()
    stack = [task]
    while stack:
        for need in graph.get(stack.pop(), ()):
            if need not in found:
                found.add(need)
                stack.append(need)
    return found
