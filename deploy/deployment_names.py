"""Print the deployments of prefect.yaml as ``<flow name>/<deployment name>``, one per line (deploy/deploy.sh
checks the names it is given against these). The flow name is the one its decorator sets, read from the
entrypoint's module, so it stays right when a flow is renamed."""
from __future__ import annotations

import ast
from pathlib import Path

import yaml

from clipae import REPO_ROOT


def flow_name(entrypoint: str) -> str:
    """``flows/x.py:func`` -> the ``name=`` of func's ``@flow``, resolving a module-level constant such as
    FLOW_NAME (without importing the module: prefect and torch take seconds)."""
    path, func = entrypoint.split(":")
    tree = ast.parse((REPO_ROOT / path).read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "flow":
                    for kw in dec.keywords:
                        if kw.arg == "name":
                            v = kw.value
                            return v.value if isinstance(v, ast.Constant) else consts[v.id]
            return func.replace("_", "-")  # (Prefect's default)
    raise ValueError(f"{entrypoint}: no function {func}")


def deployment_names(prefect_yaml: Path = REPO_ROOT / "prefect.yaml") -> list[str]:
    doc = yaml.safe_load(prefect_yaml.read_text())
    return [f"{flow_name(d['entrypoint'])}/{d['name']}" for d in doc.get("deployments") or []]


if __name__ == "__main__":
    print("\n".join(deployment_names()))
