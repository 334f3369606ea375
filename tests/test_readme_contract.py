"""The README's "Adding a variant" names the whole plugin surface, and the example plugin's README agrees with its code.

Read from the files with `ast` and plain text: a public name or a support attribute added to the
code without a word in the README fails here, as does an example README that names an import the
example does not use or leaves out an attribute or method the example defines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import attnbench
from attnbench.core.variant import Variant

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "attnbench-sigmoid-attention"
EXAMPLE_CODE = EXAMPLE / "src" / "attnbench_sigmoid_attention" / "sigmoid.py"


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def quoted(text: str) -> set[str]:
    """Every identifier written in backticks, alone or at the head of a call (`flops(case)`)."""
    return {m.group(1) for m in re.finditer(r"`([A-Za-z_][A-Za-z0-9_]*)", text)}


def test_adding_a_variant_lists_every_public_name_and_every_support_attribute():
    named = quoted(section((ROOT / "README.md").read_text(encoding="utf-8"), "Adding a variant"))
    missing = sorted(set(attnbench.__all__) - named)
    assert not missing, f"public names missing from README's 'Adding a variant': {missing}"
    attributes = [name for name, value in vars(Variant).items()
                  if not name.startswith("_") and not callable(value) and not isinstance(value, property)]
    assert {"supports_gqa", "supports_v_head_dim", "supported_masks", "supported_score_mods"} <= set(attributes)
    missing = sorted(set(attributes) - named)
    assert not missing, f"Variant attributes missing from README's 'Adding a variant': {missing}"


def test_the_example_plugins_readme_agrees_with_its_code():
    readme = quoted((EXAMPLE / "README.md").read_text(encoding="utf-8"))
    tree = ast.parse(EXAMPLE_CODE.read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "attnbench"
                for alias in node.names}
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "SigmoidAttention"]
    attributes = {target.id for node in cls.body if isinstance(node, ast.Assign) for target in node.targets
                  if isinstance(target, ast.Name)}
    methods = {node.name for node in cls.body if isinstance(node, ast.FunctionDef)}
    assert imported and {"name", "params"} <= attributes and {"prepare", "reference", "flops"} <= methods
    for kind, names in (("import from attnbench", imported), ("class attribute", attributes), ("method", methods)):
        missing = sorted(names - readme)
        assert not missing, f"the example's README does not mention its {kind}(s) {missing}"
    text = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    said = re.search(r"imports only `from attnbench import \.\.\.`: here (.*?)\.", text, re.S).group(1)
    assert quoted(said) == imported, "the README's list of imports is the code's"
