#!/usr/bin/env python3
"""Checks the import rules of ARCHITECTURE.md from the source, with the standard library only.

    python scripts/check_imports.py [ROOT]      # exit 0: every rule holds; 1: one line per broken import

The rules, for every import statement anywhere in a module (lazy imports inside functions included):

- common/ (the leaf package) imports nothing of the project;
- space/ imports nothing of launch/, data/, perturb/, supernet/, evaluation/ or nasbench301_eval/;
- data/ imports nothing of space/, perturb/, supernet/ or evaluation/;
- launch/ imports nothing of perturb/, supernet/ or evaluation/;
- nasbench301_eval/ imports only space/ and the leaf package;
- no module imports a CLI script (a file with an ``if __name__ == "__main__":`` guard).

Tests (tests/) are not modules of the project and may import anything, CLIs included, to test them.
The script parses files with :mod:`ast`; it imports none of them, so it knows nothing of the project's code.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("common", "space", "data", "launch", "perturb", "supernet", "evaluation", "nasbench301_eval")

# package -> the project packages it must not import ("*" = every project package but itself and `allowed`).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "common": PACKAGES,
    "space": ("launch", "data", "perturb", "supernet", "evaluation", "nasbench301_eval"),
    "data": ("space", "perturb", "supernet", "evaluation"),
    "launch": ("perturb", "supernet", "evaluation"),
    "nasbench301_eval": tuple(p for p in PACKAGES if p not in ("space", "common")),
}
SKIPPED_FOLDERS = {"tests", ".git", "runs", "__pycache__", ".venv", "venv", "build"}


def module_name(path: Path, root: Path) -> str:
    """``space/genotype.py`` -> ``space.genotype``; ``pkg/__init__.py`` -> ``pkg``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path) -> list[Path]:
    """Every .py file of the project outside tests/ and build or run folders, in a stable order."""
    return sorted(path for path in root.rglob("*.py")
                  if not SKIPPED_FOLDERS.intersection(path.relative_to(root).parts[:-1]))


def is_cli_script(tree: ast.Module) -> bool:
    """True when the module has a top-level ``if __name__ == "__main__":`` guard."""
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)):
            return True
    return False


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the module, relative imports resolved.

    ``from a import b`` yields both ``a`` and ``a.b``: b may be a submodule (a CLI script, for instance).
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
    return found


def broken_imports(root: Path) -> list[str]:
    """One line per import that breaks a rule: ``path:line: <module> imports <name>: <rule>``."""
    files = project_files(root)
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for path in files}
    cli_modules = {module_name(path, root) for path, tree in trees.items() if is_cli_script(tree)}
    problems: list[str] = []
    for path, tree in trees.items():
        module = module_name(path, root)
        package = module.split(".")[0]
        for line, name in imported_modules(tree, module, path.name == "__init__.py"):
            top = name.split(".")[0]
            where = f"{path.relative_to(root)}:{line}: {module} imports {name}"
            if top in FORBIDDEN.get(package, ()) and top != package:
                problems.append(f"{where}: {package}/ must not import {top}/")
            if name in cli_modules and name != module:
                problems.append(f"{where}: {name} is a CLI script, and no module imports a CLI script")
    return sorted(set(problems))


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    problems = broken_imports(root)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"import rules hold in {len(project_files(root))} files under {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
