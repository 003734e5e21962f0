"""Profiles and typed parameters: one PROFILE decides the scale, individual parameters override it.

Every parameter has a type, an allowed range or set, and a one-line meaning (`PARAMS`); `resolve` fills the profile's
values, applies overrides, and refuses an unknown name, a wrong type or a value out of range before anything runs.
Reproduce: `python -m workbench run 02 --profile smoke -p SEED 1` (`python -m workbench params` lists them all).

Longer than 300 lines: the shared parameter table (one typed entry per parameter) is most of it.
"""
from __future__ import annotations

import ast
import difflib
import math
import os
import re
from dataclasses import dataclass

PROFILE_ENV = "WORKBENCH_PROFILE"
DEFAULT_PROFILE = "cpu"


class ConfigError(ValueError):
    """A bad profile or parameter, with a message that says what to do."""


@dataclass(frozen=True)
class Param:
    """One parameter: its default, type (int | float | str | list_int | list_str), range or choices, and meaning.

    Args:
        default: value in the cpu profile (other profiles override some).
        kind: int, float, str, list_int or list_str; numbers given as strings are refused.
        doc: one-line meaning, shown in errors and by `python -m workbench params`.
        low, high: inclusive bounds for numbers (and for every element of a list_int).
        choices: allowed values of a str (or of every element of a list_str).
        optional: whether None is allowed (it means what `doc` says).
        open_high, open_low: the upper / lower bound is exclusive.
        pattern: a regular expression a str must match whole (DEVICE: cpu, cuda, cuda:N).
    """
    default: object
    kind: str
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    optional: bool = False
    open_high: bool = False
    open_low: bool = False
    pattern: str | None = None

    def describe(self) -> str:
        """'int >= 1 or None' style summary of what is allowed."""
        kind = {"list_int": "list of int", "list_str": "list of str"}.get(self.kind, self.kind)
        parts = [kind]
        if self.choices:
            parts = [f"one of {', '.join(self.choices)}" if self.kind == "str" else f"{kind} from {', '.join(self.choices)}"]
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        return " ".join(parts) + (" or None" if self.optional else "")


def _p(default, kind, doc, **kw) -> Param:
    """A Param (shorthand for the table below and the methods' blocks)."""
    return Param(default, kind, doc, **kw)


PARAMS: dict[str, Param] = {
    # data and protocol: these identify the candidate set
    "DATASET": _p("ml-100k", "str", "data set: ml-100k (packaged, offline), or ml-1m, mind, amazon (need DATA_PATH)",
                  choices=("ml-100k", "ml-1m", "mind", "amazon")),
    "DATA_PATH": _p(None, "str", "folder with the data set's official files (GroupLens, MIND, Amazon Reviews); "
                    "None = the packaged MovieLens-100K",
                    optional=True),
    "TIE_BREAK": _p("file_order", "str", "order of same-timestamp interactions: file_order (as recorded) or item_id",
                    choices=("file_order", "item_id")),
    "MIN_INTERACTIONS": _p(3, "int", "users with fewer interactions are dropped (and reported)", low=3),
    "N_NEGATIVES": _p(19, "int", "candidates = target + N_NEGATIVES unseen items (sampled ranking)", low=1),
    "CANDIDATE_SEED": _p(0, "int", "seed of the fixed candidates and of the evaluated-user subsets", low=0),
    "MAX_USERS": _p(None, "int", "train and evaluate on a seeded subset of users; None = all", low=1, optional=True),
    "HISTORY_LEN": _p(10, "int", "items before the target shown to a model", low=1),
    # training seed and run settings
    "SEED": _p(0, "int", "training seed: initialisation, batch order, augmentation draws (candidates: CANDIDATE_SEED)", low=0),
    "N_BOOTSTRAP": _p(1000, "int", "bootstrap resamples for 95% CIs and paired tests", low=100),
    "NUM_THREADS": _p(None, "int", "torch CPU threads; None = all cores (1 for tiny models)", low=1, optional=True),
    "DEVICE": _p(None, "str", "cpu, cuda or cuda:N; None = cuda if available, else cpu", optional=True,
                  pattern=r"cpu|cuda(:[0-9]+)?"),
    # conventional baselines
    "EPOCHS": _p(20, "int", "baselines: maximum epochs (early stopping on validation NDCG@10)", low=1),
    "PATIENCE": _p(3, "int", "baselines: epochs without validation gain before stopping", low=1),
    "BATCH_SIZE": _p(256, "int", "baselines: training batch size", low=1),
    "LEARNING_RATE": _p(1e-3, "float", "baselines: Adam learning rate", low=0, high=1, open_low=True),
    "EMBED_DIM": _p(64, "int", "baselines: item embedding / hidden size (a multiple of NUM_HEADS)", low=1),
    "NUM_LAYERS": _p(2, "int", "baselines: SASRec blocks / GRU layers", low=1),
    "NUM_HEADS": _p(2, "int", "baselines: SASRec attention heads", low=1),
    "DROPOUT": _p(0.2, "float", "baselines: dropout", low=0, high=1, open_high=True),
    # LLM methods
    "MODEL": _p("smollm2-135m", "str", "smollm2-135m (offline) | tiny (smoke) | a Hugging Face causal LM name or path"),
    "LLM_EVAL_USERS": _p(200, "int", "test users scored by an LLM (seeded subset); None = all", low=1, optional=True),
    "LLM_TRAIN_SAMPLES": _p(64, "int", "training windows used for SFT (seeded subset); 0 = zero-shot; None = all",
                            low=0, optional=True),
    "LLM_EPOCHS": _p(1, "int", "passes over the SFT samples, each with its own augmentation draw", low=1),
    "LLM_BATCH_SIZE": _p(4, "int", "SFT batch size per device", low=1),
    "GRAD_ACCUM": _p(2, "int", "SFT gradient accumulation steps", low=1),
    "LLM_LEARNING_RATE": _p(2e-3, "float", "SFT learning rate", low=0, high=1, open_low=True),
    "WARMUP_STEPS": _p(0, "int", "SFT learning-rate warm-up steps", low=0),
    "LR_SCHEDULE": _p("constant", "str", "SFT learning rate after the warm-up: constant (cpu: a few steps learn at the "
                      "full rate), cosine (to 0), linear (to 0) or cosine_floor (cosine to 10% of LLM_LEARNING_RATE; "
                      "gpu)",
                      choices=("cosine", "constant", "linear", "cosine_floor")),
    "LLM_OBJECTIVE": _p("sft", "str", "LLM training loss: sft (the papers': the answer's likelihood), listwise "
                        "(cross-entropy over the row's candidates' ranking scores, the target as the label) or both",
                        choices=("sft", "listwise", "both")),
    "LISTWISE_TEMPERATURE": _p(1.0, "float", "listwise objective: the candidates' summed title log-likelihoods are "
                               "divided by this before the softmax (> 1 softens it; the ranking's order is unchanged)",
                               low=0, open_low=True, high=1000),
    "PROMPT_FORM": _p("free", "str", "LLM prompts: free (no candidate named: user and history, then each candidate's "
                      "title scored as the answer) or listed (the candidate titles listed before the question, the "
                      "papers' form)", choices=("free", "listed")),
    "DTYPE": _p(None, "str", "LLM weights' dtype: bf16 or fp32; None = bf16 on CUDA, fp32 on CPU (bf16 on CPU runs the "
                "gpu code paths, slowly)", choices=("bf16", "fp32"), optional=True),
    "SAVE_STEPS": _p(25, "int", "SFT checkpoint interval in steps (resume after an interruption)", low=1),
    "LORA_R": _p(8, "int", "LoRA rank", low=1),
    "LORA_ALPHA": _p(16, "float", "LoRA scaling alpha (> 0: 0 trains nothing)", low=0, open_low=True, high=1e6),
    "LORA_DROPOUT": _p(0.05, "float", "LoRA dropout", low=0, high=1, open_high=True),
    "LORA_TARGETS": _p(["q_proj", "k_proj", "v_proj", "o_proj"], "list_str", "module names that get LoRA adapters"),
    "MAX_PROMPT_TOKENS": _p(640, "int", "prompts are cut from the oldest history item to fit", low=16),
    "MAX_COMPLETION_TOKENS": _p(32, "int", "longest answer trained on", low=1),
    "SCORE_REDUCE": _p("sum", "str", "candidate log-likelihood over the title's tokens: sum or mean",
                       choices=("sum", "mean")),
    "SCORE_ORDERS": _p(1, "int", "candidate orders each user is scored under, scores averaged (1 = as stored; 2 adds "
                        "the reverse; more add seeded shuffles): cancels the LLM's position bias", low=1),
    "RANK_BATCH_SIZE": _p(None, "int", "sequences (user x order) per forward pass when ranking; None = from free "
                          "memory", low=1, optional=True),
    "ATTENTION": _p(None, "str", "attention kernel for training: sdpa, eager, flex_attention or flash_attention_2 "
                    "(if installed); None = the model's default (sdpa). Ranking always uses a masked kernel (sdpa)",
                    optional=True, choices=("sdpa", "eager", "flex_attention", "flash_attention_2")),
    "SFT_PACKING": _p("padded", "str", "SFT batches: padded (each example padded to the longest), padding_free "
                      "(examples concatenated, position ids keep them apart) or packed (bin-packed to max length)",
                      choices=("padded", "padding_free", "packed")),
    "GEN_EVAL_USERS": _p(2, "int", "users for the generate-then-match comparison (0 = skip)", low=0),
    # ablations of every LLM method
    "METHOD_SEEDS": _p([0], "list_int", "training seeds the comparison (notebook 09, the report) pools per method "
                       "(>= 3 in the gpu profile)", low=0),
    "ABLATION_SEEDS": _p([0], "list_int", "training seeds per ablation arm (>= 3 in the gpu profile)", low=0),
    "ABLATION_EVAL_USERS": _p(16, "int", "LLM_EVAL_USERS of each ablation arm; None = all", low=1, optional=True),
    "ABLATION_TRAIN_SAMPLES": _p(8, "int", "LLM_TRAIN_SAMPLES of each ablation arm; None = all", low=0,
                                 optional=True),
    # methods with ID embeddings (RSLLM, BDLM)
    "ID_MODEL_SEED": _p(0, "int", "RSLLM, BDLM: training seed of the saved SASRec run (notebook 02) whose item table "
                        "(BDLM: whole model, DOMAIN_MODEL) is read", low=0),
}

PROFILES: dict[str, dict] = {
    # tests, nbval, CI: a few dozen users, tiny models, seconds per notebook
    "smoke": {"MAX_USERS": 40, "EPOCHS": 2, "PATIENCE": 1, "EMBED_DIM": 16, "NUM_LAYERS": 1, "N_BOOTSTRAP": 100,
              "NUM_THREADS": 1, "MODEL": "tiny", "LLM_EVAL_USERS": 6, "LLM_TRAIN_SAMPLES": 32, "GRAD_ACCUM": 1,
              "LLM_LEARNING_RATE": 5e-3, "SAVE_STEPS": 4, "MAX_PROMPT_TOKENS": 1024, "GEN_EVAL_USERS": 3,
              "ABLATION_EVAL_USERS": 6, "ABLATION_TRAIN_SAMPLES": 8, "SCORE_ORDERS": 2},
    # `make run` on 2 CPU cores: every notebook within 45 minutes (LLMs on small nested subsets)
    "cpu": {},
    # real experiments on one GPU, sized for every notebook within an hour on one H100 with SmolLM2-135M (estimated
    # from the engine's speed-ups until measured there: docs/design.md, "The LLM engine")
    "gpu": {"EPOCHS": 200, "PATIENCE": 10, "LLM_EVAL_USERS": None, "LLM_TRAIN_SAMPLES": 20000, "LLM_EPOCHS": 2,
            "LLM_BATCH_SIZE": 32, "GRAD_ACCUM": 1, "LLM_LEARNING_RATE": 3e-4, "WARMUP_STEPS": 30,
            "LR_SCHEDULE": "cosine_floor", "SAVE_STEPS": 200, "GEN_EVAL_USERS": 200, "ABLATION_SEEDS": [0, 1, 2],
            "METHOD_SEEDS": [0, 1, 2], "ABLATION_EVAL_USERS": None, "ABLATION_TRAIN_SAMPLES": 10000, "SCORE_ORDERS": 2,
            "MAX_PROMPT_TOKENS": 1536},
    # `make gpu-check` on one H100/H200: every method and baseline on all 943 users, one seed, the cpu profile's
    # ablation arms, the comparison and the report within 8 minutes (sized by evaluation/budget.py's estimate from
    # the committed cpu runs' counted work: 7.0 min at 5% MFU; tests/unit/test_budget.py holds it under 8)
    "gpu-quick": {"LLM_EVAL_USERS": None, "LLM_TRAIN_SAMPLES": 2000, "LLM_BATCH_SIZE": 32,
                  "GRAD_ACCUM": 1, "LLM_LEARNING_RATE": 5e-4, "WARMUP_STEPS": 6, "LR_SCHEDULE": "cosine_floor",
                  "SAVE_STEPS": 100, "GEN_EVAL_USERS": 20, "ABLATION_EVAL_USERS": None, "ABLATION_TRAIN_SAMPLES": 1000,
                  "SCORE_ORDERS": 2, "MAX_PROMPT_TOKENS": 1536},
}
# Each method's own parameters and profile values are declared in its folder (methods/<name>/__init__.py) and added
# here by `register` when `workbench` is imported.


def register(params: dict[str, Param], profiles: dict[str, dict] | None = None) -> None:
    """Add a method's parameter block (flat UPPER_CASE names) and its values in other profiles to the one table; a
    name declared twice, or a profile value for an unknown parameter or profile, is an error."""
    twice = sorted(set(params) & set(PARAMS))
    if twice:
        raise ValueError(f"parameter(s) {', '.join(twice)} are declared twice: declare each in one place")
    for profile, values in (profiles or {}).items():
        unknown = sorted(set(values) - set(params))
        if profile not in PROFILES or unknown:
            raise ValueError(f"profile {profile!r} values for {', '.join(unknown) or 'nothing'} outside this block: "
                             f"give profile values only for the block's own parameters and for {', '.join(PROFILES)}")
    PARAMS.update(params)
    for profile, values in (profiles or {}).items():
        PROFILES[profile].update(values)


def profile_name(profile: str | None = None) -> str:
    """The profile to use: the argument, else $WORKBENCH_PROFILE, else cpu; unknown names are refused."""
    name = profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)} "
                          f"(argument PROFILE, --profile or ${PROFILE_ENV})")
    return name


def _literal(value):
    """A string that spells a Python literal ('3', '(0, 1)', 'None') as that literal; other values unchanged."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return value
    return value


def _number(name: str, spec: Param, value, kind: str):
    """An int or float within the spec's bounds, or a ConfigError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind == "int" and not float(value).is_integer():
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be {spec.describe()}, got {value!r}: {spec.doc}")
    if not math.isfinite(value):  # 1e400 reads as inf: no bound check would see it
        raise ConfigError(f"{name} must be a finite {spec.describe()}, got {value!r}: {spec.doc}")
    value = int(value) if kind == "int" else float(value)
    above = spec.high is not None and (value >= spec.high if spec.open_high else value > spec.high)
    below = spec.low is not None and (value <= spec.low if spec.open_low else value < spec.low)
    if below or above:
        raise ConfigError(f"{name} must be {spec.describe()}, got {value!r}: {spec.doc}")
    return value


def check_value(name: str, value):
    """The value converted to its parameter's type (tuples become lists), or a ConfigError saying what is allowed.

    A number given as text ("1") is refused, as on the command line; only a list may be spelt as text ("(0, 1)":
    papermill injects tuples that way) and None as "None"."""
    spec = PARAMS[name]
    if value == "None" or (spec.kind.startswith("list") and isinstance(value, str)):
        value = _literal(value)
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(f"{name} must be {spec.describe()}, got None: {spec.doc}")
    if spec.kind in ("int", "float"):
        return _number(name, spec, value, spec.kind)
    if spec.kind == "str":
        if not isinstance(value, str) or (spec.choices and value not in spec.choices) or (
                spec.pattern and not re.fullmatch(spec.pattern, value)):
            raise ConfigError(f"{name} must be {spec.describe()}, got {value!r}: {spec.doc}")
        return value
    items = [value] if isinstance(value, (int, str)) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{name} must be a non-empty {spec.describe()}, got {value!r}: {spec.doc}")
    if len(set(map(str, items))) != len(items):  # seeds [0, 0] would present one run as two
        raise ConfigError(f"{name} lists a value twice ({list(items)}): list each once")
    if spec.kind == "list_int":
        return [_number(name, spec, v, "int") for v in items]
    if not all(isinstance(v, str) and (not spec.choices or v in spec.choices) for v in items):
        raise ConfigError(f"{name} must be a {spec.describe()}, got {value!r}: {spec.doc}")
    return list(items)


def _check_together(values: dict) -> None:
    """Constraints that involve two parameters."""
    if values["EMBED_DIM"] % values["NUM_HEADS"]:
        raise ConfigError(f"EMBED_DIM ({values['EMBED_DIM']}) must be a multiple of NUM_HEADS ({values['NUM_HEADS']})")
    if values["DATASET"] != "ml-100k" and values["DATA_PATH"] is None:
        raise ConfigError(f"DATASET={values['DATASET']} is not packaged offline: set DATA_PATH to the folder "
                          f"with its official files")


def resolve(profile: str | None = None, **overrides) -> dict:
    """The profile's parameters with the non-None overrides applied, each checked; unknown names are errors."""
    name = profile_name(profile)
    unknown = sorted(set(overrides) - set(PARAMS))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}{_nearest(unknown)}; valid: PROFILE, "
                          f"{', '.join(sorted(PARAMS))}")
    values = {k: spec.default for k, spec in PARAMS.items()}
    values.update(PROFILES[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values = {k: check_value(k, v) for k, v in values.items()}
    _check_together(values)
    return {"PROFILE": name, **values}


def _nearest(names) -> str:
    """' (did you mean X?)' for the first unknown name close to a parameter's, else ''."""
    for name in names:
        near = difflib.get_close_matches(name, list(PARAMS), n=1, cutoff=0.6)
        if near:
            return f" (did you mean {near[0]}?)"
    return ""


def notebook_parameters(namespace: dict) -> dict:
    """The UPPER_CASE names of a namespace (a script's globals; notebooks read their cells: cell_parameters)."""
    return {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}


INJECTED_MARK = "# Parameters"  # the first line of the cell papermill injects after the parameters cell


def assignments(source: str) -> dict | None:
    """{NAME: literal} of a cell made only of `UPPER_CASE = value` lines (and comments), else None; a value that is
    not a literal there is an error naming its line."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    out = {}
    if not tree.body or not all(isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                                and n.targets[0].id.isupper() for n in tree.body):
        return None
    for node in tree.body:
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ConfigError(f"parameters cell, line {node.lineno}: {ast.unparse(node)} is not a plain value "
                              f"(write a literal: a number, a string, None or a list)") from None
    return out


def cell_parameters(namespace: dict) -> dict | None:
    """The parameters as the notebook's cells spell them, read from the kernel's input history (`In`): the latest
    run of its parameters cell (the one that sets PROFILE), then papermill's injected cell if it ran after it.

    So deleting an override and re-running the cell restores the profile's value, and UPPER_CASE scratch constants
    of other cells are not parameters.  None when there is no such history (a script: use its globals)."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return None
    cells = [(i, assignments(src)) for i, src in enumerate(history) if "PROFILE" in src or
             src.lstrip().startswith(INJECTED_MARK)]
    cells = [(i, a) for i, a in cells if a is not None]
    own = [(i, a) for i, a in cells if "PROFILE" in a and not history[i].lstrip().startswith(INJECTED_MARK)]
    if not own:
        return None
    last, params = own[-1][0], dict(own[-1][1])
    for i, a in cells:
        if i > last and history[i].lstrip().startswith(INJECTED_MARK):
            params.update(a)
    return params


def notebook_values(namespace: dict) -> dict:
    """The parameters a notebook gives (PROFILE included): its cells' text (cell_parameters), else, without an input
    history, its UPPER_CASE globals."""
    cells = cell_parameters(namespace)
    return dict(notebook_parameters(namespace) if cells is None else cells)


def changed_parameters(cfg: dict) -> list[str]:
    """The parameters of a resolved cfg whose value is not its profile's (DEVICE aside: it is resolved at start)."""
    base = resolve(cfg["PROFILE"])
    return [k for k in PARAMS if k != "DEVICE" and cfg.get(k) != base[k]]


def describe_all(profile: str = DEFAULT_PROFILE, width: int = 120) -> str:
    """Every parameter with its value in `profile` (* where the profile changes the default), what is allowed and
    what it means, wrapped to `width` columns."""
    import textwrap
    values = resolve(profile)
    lines = [f"parameters of profile {profile} (* = this profile's own value; default in brackets)", ""]
    for k, p in PARAMS.items():
        mark = f" *  [default {p.default}]" if k in PROFILES[profile] else ""
        line = f"{k} = {values[k]!r}{mark}"
        lines += [line] if len(line) <= width else [f"{k} = {values[k]!r} *", f"    [default {p.default}]"]
        lines += textwrap.wrap(f"{p.describe()}. {p.doc}", width, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def format_parameters(cfg: dict, names, width: int = 110) -> str:
    """`NAME=value` pairs for `names`, several per line within `width` columns; * marks a value that is not the
    profile's (an override)."""
    changed = set(changed_parameters(cfg))
    items = [f"{k}={cfg[k]!r}" + ("*" if k in changed else "") for k in names]
    lines, line = [], ""
    for item in items:
        if line and len(line) + 2 + len(item) > width:
            lines.append(line)
            line = ""
        line = f"{line}  {item}" if line else item
    return "\n".join([*lines, line] if line else lines)


def override(cfg: dict, **changes) -> dict:
    """A resolved cfg with some parameters changed, checked like any override (for grids and arms)."""
    params = {k: v for k, v in cfg.items() if k != "PROFILE"}
    unknown = sorted(set(changes) - set(PARAMS))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(PARAMS))}")
    values = {k: check_value(k, v) for k, v in {**params, **changes}.items()}
    _check_together(values)
    return {"PROFILE": cfg["PROFILE"], **values}
