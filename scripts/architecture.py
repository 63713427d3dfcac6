"""Recount the figures of docs/ARCHITECTURE.md: import circles, layering, file and function sizes.

    python scripts/architecture.py            # the table, then every violation
    python scripts/architecture.py --strict   # exit 1 on any violation (tests/test_architecture.py does this)

Reads the source with `ast` only (nothing is imported), so it runs without torch.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "leadrrg"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80

# Leaves: modules every stage may import.
LEAVES = ("constants", "errors", "io", "progress", "registry", "collectives", "fetch", "config")
# What each stage may import besides the leaves (the house rules of docs/ARCHITECTURE.md).
ALLOWED = {
    "config": set(),
    "labeler": set(),
    "metrics": {"labeler"},
    "data": {"labeler", "metrics"},
    "model": set(),
    "runs": {"model", "data"},
    "inference": {"model", "data", "runs", "labeler"},
    "serve": {"inference", "data", "runs", "labeler"},
    "evaluation": {"metrics", "labeler", "data", "inference", "runs", "model"},
    "train": {"model", "data", "runs", "inference", "evaluation", "metrics", "labeler"},
    "experiments": {"train", "inference", "evaluation", "runs", "data", "model", "metrics", "labeler"},
    "commands": {"*"},
    "cli": {"commands"},
    "__init__": {"inference"},
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, bool]]:
    """(imported leadrrg module, inside a function) for every import in the file."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.startswith("leadrrg"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("leadrrg"):
                found.extend((f"{child.module}.{alias.name}", in_function) for alias in child.names)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # typing-only imports are not run-time dependencies
            visit(child, local)

    visit(tree, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _imports_leadrrg(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.startswith("leadrrg") for a in node.names)
    return bool(node.module and node.module.startswith("leadrrg"))


def resolve(name: str, modules: set[str]) -> str | None:
    """The module a dotted import refers to (`a.b.name` -> `a.b` when `name` is not a module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def function_spans(tree: ast.AST) -> list[tuple[str, int, int]]:
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans.append((node.name, node.lineno, node.end_lineno - node.lineno + 1))
    return spans


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                strongconnect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def measure() -> dict:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p): p for p in files}
    graph: dict[str, set[str]] = defaultdict(set)
    local_imports = 0  # import statements inside functions
    layering: list[str] = []
    long_files, long_functions = [], []
    for module, path in modules.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        lines = len(text.splitlines())
        rel = path.relative_to(PACKAGE.parent.parent)
        if lines > MAX_FILE_LINES:
            long_files.append(f"{rel}: {lines} lines")
        for name, start, length in function_spans(tree):
            if length > MAX_FUNCTION_LINES:
                long_functions.append(f"{rel}:{start} {name}: {length} lines")
        local_imports += len(
            {
                id(node)
                for function in ast.walk(tree)
                if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                for node in ast.walk(function)
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _imports_leadrrg(node)
            }
        )
        for imported, _in_function in imports_of(tree, module, path.name == "__init__.py"):
            target = resolve(imported, set(modules))
            if target is None or target == module or module.startswith(target + "."):
                continue  # a package importing its own face, or a module its own package
            graph[module].add(target)
            source_stage, target_stage = stage_of(module), stage_of(target)
            allowed = ALLOWED.get(source_stage, set())
            if (
                source_stage != target_stage
                and target_stage not in LEAVES
                and "*" not in allowed
                and target_stage not in allowed
            ):
                layering.append(f"{module} imports {target} ({source_stage} may not import {target_stage})")
            if source_stage == target_stage == "commands" and target != "leadrrg.commands":
                layering.append(f"{module} imports another command module, {target}")
    layering = sorted(set(layering))
    loose = sorted(m for m in modules if m.count(".") == 1 and modules[m].name != "__init__.py")
    return {
        "modules": len(modules),
        "loose": loose,
        "import_arrows": sum(len(v) for v in graph.values()),
        "cycles": cycles(graph),
        "layering": layering,
        "long_files": long_files,
        "long_functions": long_functions,
        "local_imports": local_imports,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 on any violation")
    args = parser.parse_args()
    m = measure()
    print(f"modules                         {m['modules']}")
    print(
        f"top-level modules (leaves)      {len(m['loose'])}: {', '.join(x.split('.')[1] for x in m['loose'])}"
    )
    print(f"module-to-module imports        {m['import_arrows']}")
    print(f"function-local leadrrg imports  {m['local_imports']}")
    print(f"import circles                  {len(m['cycles'])}")
    print(f"layering violations             {len(m['layering'])}")
    print(f"files over {MAX_FILE_LINES} lines            {len(m['long_files'])}")
    print(f"functions over {MAX_FUNCTION_LINES} lines         {len(m['long_functions'])}")
    problems = [" <-> ".join(c) for c in m["cycles"]] + m["layering"] + m["long_files"] + m["long_functions"]
    for line in problems:
        print(f"  {line}")
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    sys.exit(main())
