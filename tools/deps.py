"""Write each stage's code deps in dvc.yaml from its imports (`make deps`).

A stage's code deps are its script, every project module the script reaches through its imports
(transitively, function-level imports included) and the package templates those modules name.
This rewrites the code part of each stage's `deps:` list in dvc.yaml (data deps stay as they
are, after the code), and docs/pipeline.md's table of what an edit to each module reruns.
`--check` writes nothing and exits 1 naming each stage that differs (tests/repo/test_dependencies.py).

    python tools/deps.py            # rewrite dvc.yaml and the docs table
    python tools/deps.py --check    # what would change
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mnist_vae"
SRC = REPO / "src" / PACKAGE
WIDTH = 110  # dvc.yaml's line length for the wrapped lists
TABLE_START, TABLE_END = "<!-- rerun table: make deps writes it -->", "<!-- end of the rerun table -->"


def _module_file(name: str) -> Path | None:
    """The file of a dotted module under the package (a module or a subpackage's __init__)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = SRC.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if len(parts) > 1 and path.exists():
            return path
    return SRC / "__init__.py" if len(parts) == 1 else None


def _packages(module: Path) -> set[Path]:
    """The __init__.py of every package above a module (importing it runs each of them)."""
    out, folder = set(), module.parent
    while folder.is_relative_to(SRC):
        out.add(folder / "__init__.py")
        folder = folder.parent
    return out


def imported_files(path: Path) -> set[Path]:
    """The project modules one file imports directly (anywhere in it, not only at the top), with
    the __init__.py of the packages they sit in."""
    package = ".".join((PACKAGE, *path.parent.relative_to(SRC).parts)) if path.is_relative_to(SRC) else None
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package:  # relative: only inside the package
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            module = _module_file(name) if name.split(".")[0] == PACKAGE else None
            if module is not None:
                found |= {module} | _packages(module)
    return found


def package_data(path: Path) -> set[Path]:
    """The package's data files (templates/<name>) a module names in its source."""
    text = path.read_text()
    return {p for name in re.findall(r"\btemplates/([\w.-]+)", text) for p in SRC.rglob(f"templates/{name}")}


def code_closure(script: Path) -> set[str]:
    """The script, every project module it reaches and the templates they name, as
    repository-relative paths."""
    seen, todo = {script}, [script]
    while todo:
        for dep in imported_files(todo.pop()) - seen:
            seen.add(dep)
            todo.append(dep)
    seen |= {data for module in list(seen) for data in package_data(module)}
    return {p.relative_to(REPO).as_posix() for p in seen}


def is_code(dep: str) -> bool:
    return dep.endswith(".py") or dep.startswith("src/")


def stage_script(cmd: str) -> Path:
    match = re.search(r"\bpython3?\s+(\S+\.py)", cmd)
    if not match:
        raise SystemExit(f"deps: cannot find the stage script in {cmd!r}")
    return REPO / match.group(1)


def ordered(script: Path, closure: set[str]) -> list[str]:
    first = script.relative_to(REPO).as_posix()
    return [first] + sorted(closure - {first})


# --- dvc.yaml, as text: the comments and layout stay ---------------------------------------


_STAGE = re.compile(r"^  ([\w-]+):", re.M)
_DEPS = re.compile(r"^(?P<indent> +)deps:(?P<comment>[^\n]*)\n(?P<lead> +)\[(?P<body>[^\]]*)\]", re.M)
_CMD = re.compile(r"^ +cmd: (.*)$", re.M)


def _wrap(items: list[str], lead: str) -> str:
    lines, line = [], lead + "["
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "]")
        if len(line) + len(piece) + 1 > WIDTH and line.strip() != "[":
            lines.append(line.rstrip())
            line = lead + " " + piece
        else:
            line += ("" if line.endswith("[") else " ") + piece
    lines.append(line)
    return "\n".join(lines)


def rewrite(text: str) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """dvc.yaml with every stage's code deps derived, and {stage: {"added", "removed"}} of the
    stages that changed."""
    changes: dict[str, dict[str, list[str]]] = {}
    top = re.search(r"^stages:.*$", text, flags=re.M)
    after = re.search(r"^\S", text[top.end():], flags=re.M) if top else None
    end_of_stages = top.end() + after.start() if after else len(text)
    starts = [(m.start(), m.group(1)) for m in _STAGE.finditer(text, top.end() if top else 0, end_of_stages)]
    starts.append((end_of_stages, ""))
    out, pos = [], 0
    for (start, name), (end, _) in zip(starts, starts[1:]):
        block = text[start:end]
        deps, cmd = _DEPS.search(block), _CMD.search(block)
        if not deps or not cmd:
            raise SystemExit(f"deps: dvc.yaml stage {name!r}: no `cmd:` and flow-style `deps:` list ([...] on the "
                             "lines after `deps:`) that this tool can rewrite; write its deps that way")
        if "#" in deps.group("body"):
            raise SystemExit(f"deps: dvc.yaml stage {name!r}: a comment inside its deps list; put it on the "
                             "`deps:` line")
        items = [t.strip() for t in deps.group("body").replace("\n", " ").split(",") if t.strip()]
        code = [t for t in items if is_code(t.strip('"'))]
        data = [t for t in items if not is_code(t.strip('"'))]
        script = stage_script(cmd.group(1))
        want = ordered(script, code_closure(script))
        if want != code:
            changes[name] = {"added": sorted(set(want) - set(code)), "removed": sorted(set(code) - set(want))}
        new = f"{deps.group('indent')}deps:{deps.group('comment')}\n" + _wrap(want + data, deps.group("lead"))
        out.append(text[pos:start + deps.start()] + new)
        pos = start + deps.end()
    out.append(text[pos:])
    new = "".join(out)
    import yaml  # the rewritten file must still be the same YAML apart from the code deps

    def data_deps(doc):
        return {n: [d for d in (s.get("do", s).get("deps") or []) if not is_code(d)]
                for n, s in (doc.get("stages") or {}).items()}

    if data_deps(yaml.safe_load(new)) != data_deps(yaml.safe_load(text)):
        raise SystemExit("deps: rewriting dvc.yaml would change a data dependency; not written")
    return new, changes


def rerun_table(stages: dict[str, dict]) -> dict[str, list[str]]:
    """src file -> the stages that declare it; per-model stages by their foreach name."""
    table: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            if dep.startswith("src/") and name.split("@")[0] not in table.get(dep, []):
                table.setdefault(dep, []).append(name.split("@")[0])
    return dict(sorted(table.items()))


def docs_table(stages: dict[str, dict]) -> str:
    rows = [f"| `{path}` | {', '.join(f'`{s}`' for s in names)} |" for path, names in rerun_table(stages).items()]
    return "\n".join([TABLE_START, "| file | stages that import it (per model: every `<stage>@<model>`) |", "|---|---|", *rows, TABLE_END])


def rewrite_docs(text: str, stages: dict[str, dict]) -> str:
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"deps: docs/pipeline.md lacks the markers {TABLE_START} ... {TABLE_END}")
    head, rest = text.split(TABLE_START, 1)
    return head + docs_table(stages) + rest.split(TABLE_END, 1)[1]


# --- the architecture picture (docs/pipeline.md) ------------------------------------------------


DIAGRAM_START, DIAGRAM_END = "<!-- architecture: make deps writes it -->", "<!-- end of the architecture -->"


def room_of(path: str) -> str | None:
    """The package room a source file sits in (src/mnist_vae/<room>/...), None elsewhere."""
    parts = path.split("/")
    return parts[2] if len(parts) > 3 and parts[:2] == ["src", PACKAGE] else None


def rooms() -> dict[str, list[str]]:
    """room -> its modules, from the folders under src/mnist_vae."""
    return {d.name: sorted(p.stem for p in d.glob("*.py") if p.name != "__init__.py")
            for d in sorted(SRC.iterdir()) if (d / "__init__.py").exists()}


def room_imports() -> set[tuple[str, str]]:
    """(room, room it imports from), from every module's own imports."""
    edges = set()
    for room in rooms():
        for module in (SRC / room).glob("*.py"):
            for dep in imported_files(module):
                other = room_of(dep.relative_to(REPO).as_posix())
                if other and other != room:
                    edges.add((room, other))
    return edges


def stage_flow(stages: dict[str, dict]) -> list[tuple[str, str]]:
    """(stage, stage that reads its outputs), per-model stages by their foreach name, in
    dvc.yaml's order."""
    def paths(entries):
        return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]

    outs = {name: paths([*(s.get("outs") or []), *(s.get("metrics") or []), *(s.get("plots") or [])])
            for name, s in stages.items()}
    edges: list[tuple[str, str]] = []
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            for producer, produced in outs.items():
                if producer != name and any(dep == o or dep.startswith(o + "/") or o.startswith(dep + "/")
                                            for o in produced):
                    edge = (producer.split("@")[0], name.split("@")[0])
                    if edge[0] != edge[1] and edge not in edges:
                        edges.append(edge)
    return edges


def diagram(stages: dict[str, dict]) -> str:
    """docs/pipeline.md's picture: the stages and how data flows between them, the package's
    rooms and what each imports, and which rooms each stage's code comes from (every stage also
    reads io)."""
    names = list(dict.fromkeys(n.split("@")[0] for n in stages))
    uses: dict[str, set[str]] = {}
    for name, stage in stages.items():
        uses.setdefault(name.split("@")[0], set()).update(
            r for d in stage.get("deps", []) if (r := room_of(d)))
    ident = {n: n.replace("-", "_") for n in names}
    lines = ["```mermaid", "flowchart LR", '  subgraph stages["dvc.yaml: the stages (per model: stage@model)"]',
             "    direction TB"]
    lines += [f'    {ident[a]}["{a}"] --> {ident[b]}["{b}"]' for a, b in stage_flow(stages)]
    lines += ["  end", '  subgraph package["src/mnist_vae: the rooms"]', "    direction TB"]
    lines += [f'    room_{r}["{r}/<br/>{", ".join(mods)}"]' for r, mods in rooms().items()]
    lines += [f"    room_{a} --> room_{b}" for a, b in sorted(room_imports())]
    lines += ["  end"]
    lines += [f"  {ident[n]} -.-> room_{r}" for n in names for r in sorted(uses.get(n, ())) if r != "io"]
    lines += ["```"]
    return "\n".join([DIAGRAM_START, *lines, DIAGRAM_END])


def rewrite_diagram(text: str, stages: dict[str, dict]) -> str:
    if DIAGRAM_START not in text or DIAGRAM_END not in text:
        raise SystemExit(f"deps: docs/pipeline.md lacks the markers {DIAGRAM_START} ... {DIAGRAM_END}")
    head, rest = text.split(DIAGRAM_START, 1)
    return head + diagram(stages) + rest.split(DIAGRAM_END, 1)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything would change")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from mnist_vae.io import pipeline, yamlfile

    dvc_yaml, docs = REPO / "dvc.yaml", REPO / "docs/pipeline.md"
    text, changes = rewrite(dvc_yaml.read_text())
    stale = text != dvc_yaml.read_text()
    if not args.check and stale:
        dvc_yaml.write_text(text)
    stages = pipeline.resolve(yamlfile.loads(text), yamlfile.loads((REPO / "params.yaml").read_text()))
    doc_text = rewrite_diagram(rewrite_docs(docs.read_text(), stages), stages)
    docs_stale = doc_text != docs.read_text()
    if not args.check and docs_stale:
        docs.write_text(doc_text)
    for name, change in changes.items():
        print(f"{name}: " + "; ".join(f"{k} {', '.join(v)}" for k, v in change.items() if v))
    if docs_stale:
        print("docs/pipeline.md: the rerun table or the architecture picture " + ("differs" if args.check else "rewritten"))
    if args.check and (stale or docs_stale):
        sys.exit("deps: dvc.yaml's code deps or docs/pipeline.md's rerun table or picture differ from the imports: "
                 "run `make deps`")
    if not (stale or docs_stale):
        print("deps: dvc.yaml and docs/pipeline.md already match the imports")


if __name__ == "__main__":
    main()
