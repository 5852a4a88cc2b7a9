"""House rules over the whole package, read from the source (no imports of synpref needed).

- Imports point down a declared layer order, and no module imports itself back through others.
- No block of lines stands twice: a copy with other names is still a copy.
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synpref"

# Bottom to top. A package may import its own modules and any package on a lower layer; never
# one on its own layer or above. Imports inside functions count too: deferring an import hides
# a dependency, it does not remove it.
LAYERS = (
    ("synpref", "errors", "text"),  # the package root; errors a user can act on, text for messages
    ("registry", "config"),  # the registry class; config files and --set
    ("options",),  # command-line options built from config models
    ("data",),  # the data contract, Stage 0, the workspace store
    ("rm", "reward"),  # reward models; rule-based rewards
    ("annotate", "retrieval", "eval"),  # LLM judges; nearest neighbours; benchmarks
    ("label", "curate", "serve"),  # the annotation app; the curation loop; the reward server
    ("demo",),  # the whole pipeline
    ("cli",),  # the command line
    ("__main__",),  # python -m synpref
)
LAYER = {name: number for number, names in enumerate(LAYERS) for name in names}

DUPLICATE_LINES = 6  # a block this long standing twice is a copy
DISTINCT_SHAPES = 4  # ...unless it is a table (a run of lines of one or two shapes, e.g. fields)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The synpref modules `module` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `from synpref.x import f` -> synpref.x
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
                break
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_package_has_a_layer():
    packages = {_package(module) for module in _modules()}
    assert packages - set(LAYER) == set(), "add the new package to LAYERS"


def test_imports_point_down_the_layer_order():
    wrong = sorted(
        f"{module} imports {target} ({_package(module)} is layer {LAYER[_package(module)]}, {_package(target)} is {LAYER[_package(target)]})"
        for module, targets in _graph().items()
        for target in targets
        if _package(module) != _package(target) and LAYER[_package(target)] >= LAYER[_package(module)]
    )
    assert wrong == []


def test_no_import_cycles():
    graph = _graph()
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def test_the_checks_see_a_cycle_and_an_upward_import():
    assert [c for c in _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) if len(c) > 1] == [["a", "b", "c"]]
    assert LAYER["data"] < LAYER["eval"]  # so data importing eval would be reported


def _code_lines(path: Path) -> list[tuple[int, str, str, int | None]]:
    """Each code line as (number, text, shape, function): text with its spacing normalised; shape
    with every name a placeholder and every literal another; `function`, the line of the def
    whose body holds it (None outside functions). Imports, docstrings, comments and blank lines
    are left out."""
    source = path.read_text()
    tree = ast.parse(source)
    docstrings = {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for line in range(node.lineno, node.end_lineno + 1)
    }
    imports = {
        line
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for line in range(node.lineno, node.end_lineno + 1)
    }
    function_of: dict[int, int] = {}
    for node in ast.walk(tree):  # outer functions first, so a nested def's lines stay its parent's
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body[0].lineno not in function_of:
            for line in range(node.body[0].lineno, node.end_lineno + 1):
                function_of.setdefault(line, node.lineno)
    texts: dict[int, list[str]] = defaultdict(list)
    shapes: dict[int, list[str]] = defaultdict(list)
    skipped = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    literals = {tokenize.NUMBER, tokenize.STRING, getattr(tokenize, "FSTRING_START", -1)}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        line = token.start[0]
        if token.type in skipped or line in docstrings or line in imports:
            continue
        texts[line].append(token.string)
        if token.type == tokenize.NAME and not keyword.iskeyword(token.string) and token.string != "self":
            shapes[line].append("N")
        elif token.type in literals:
            shapes[line].append("L")
        else:
            shapes[line].append(token.string)
    return [(line, " ".join(texts[line]), " ".join(shapes[line]), function_of.get(line)) for line in sorted(texts)]


def _copies(paths: list[Path], root: Path = PACKAGE.parent) -> list[list[str]]:
    """Blocks of DUPLICATE_LINES code lines that stand more than once: the same text anywhere, or
    the same shape within function bodies (where logic lives; declarations such as a registry's
    small classes or a dataclass's fields share a shape by design)."""
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in paths:
        lines = _code_lines(path)
        for start in range(len(lines) - DUPLICATE_LINES + 1):
            block = lines[start : start + DUPLICATE_LINES]
            where = f"{path.relative_to(root)}:{block[0][0]}-{block[-1][0]}"
            if len({text for _, text, _, _ in block}) >= DISTINCT_SHAPES:
                seen["text", "\n".join(text for _, text, _, _ in block)].append(where)
            functions = {function for _, _, _, function in block}
            if len({shape for _, _, shape, _ in block}) >= DISTINCT_SHAPES and len(functions) == 1 and None not in functions:
                seen["shape", "\n".join(shape for _, _, shape, _ in block)].append(where)
    return sorted({tuple(places) for places in seen.values() if len(places) > 1})


# Copies whose removal belongs to work in progress elsewhere; each entry is a file pair, and the
# test fails once it is no longer needed, so the list only shrinks.
PENDING: set[tuple[str, ...]] = set()


def test_no_block_of_code_stands_twice():
    copies = _copies(sorted(PACKAGE.rglob("*.py")))
    pending = {pair for pair in PENDING if any(_files(places) == pair for places in copies)}
    assert pending == PENDING, "a pending copy is gone: remove it from PENDING"
    assert [places for places in copies if _files(places) not in PENDING] == []


def _files(places: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({place.rpartition(":")[0] for place in places}))


def test_the_copy_check_sees_a_renamed_copy(tmp_path):
    body = "def {f}({a}, {b}):\n    {t} = {a} + {b}\n    if {t} > 3:\n        return [{t}]\n    {b} = {t} * 2\n    {a} = {b} % 7\n    return {b} - {a}\n"
    (tmp_path / "one.py").write_text(body.format(f="first", a="x", b="y", t="total"))
    (tmp_path / "two.py").write_text('"""Doc."""\n\n' + body.format(f="second", a="p", b="q", t="sum_") + "\n\nX = 1\n")
    assert _copies([tmp_path / "one.py", tmp_path / "two.py"], root=tmp_path) == [("one.py:2-7", "two.py:4-9")]
