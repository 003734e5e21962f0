"""Every method, one folder each: `baselines/`, `mkv/`, `trsr/` (LLM-TRSR), `rsllm/`, `bdlm/`, and any other folder
placed here (a new method needs no edit outside its folder).

Importing this package declares them all (each folder's `__init__.py`: its parameters, report entries and ablation;
light, no model code), in ORDER, then any other folder alphabetically.  `workbench.recommender.get_method(name)`
imports a method's class when first asked for; `pipeline.py` drives any of them (seed -> fit -> rank -> save).
See docs/design.md, "Adding a method".
"""
import importlib
import pkgutil

ORDER = ("baselines", "mkv", "trsr", "rsllm", "bdlm")  # the comparison's row order

FOLDERS = [*ORDER, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and m.name not in ORDER)]
for _folder in FOLDERS:
    importlib.import_module(f"{__name__}.{_folder}")
