"""BDLM (Zhang et al., 2023): an information-sharing module between an LLM and a domain model (declared here).

The shared tables and the domain model are `bridge.py`, the mutual-learning phases `mutual.py`, the method
`method.py`.  This file declares its parameters, ablation arms and rows in the comparison (the LLM, the domain model
and their ensemble after the rounds).  Reproduce: `python -m workbench run 08` (method and ablation).
"""
from ... import config
from ...config import Param
from ...recommender import Ablation, Entry, MethodSpec, llm_entries, register

SHARINGS = ("none", "frozen", "one_way", "mutual")
# cpu runs no sharing against mutual sharing only: one_way could not separate from mutual at one step per round (at
# 9d75424: LLM NDCG@10 0.297 against 0.320, CI including 0; the domain model ranked identically), and frozen (~90 s)
# no longer fits the 45 minutes once MKV and RSLLM train on 64 windows and rank 200 users; gpu and smoke run all four
CPU_ARMS = ("none", "mutual")
VARIANTS = ("llm", "domain", "ensemble")  # the models evaluated before and after the rounds


def arm_changes(arm: str) -> dict:
    """The parameters of one ablation arm: a BDLM_SHARING value (none | frozen | one_way | mutual)."""
    if arm not in SHARINGS:
        raise ValueError(f"unknown BDLM arm {arm!r}: use one of {', '.join(SHARINGS)}")
    return {"BDLM_SHARING": arm}


config.register({
    "BDLM_EVAL_USERS": Param(16, "int", "BDLM evaluates at most this many of the LLM_EVAL_USERS users (the first of "
                             "the same seeded order, so they are among every LLM method's); None = all of them",
                             low=1, optional=True),
    "BDLM_TRAIN_SAMPLES": Param(16, "int", "BDLM's round 0 trains on at most this many of the LLM_TRAIN_SAMPLES "
                                "windows; None = all of them", low=1, optional=True),
    "DOMAIN_MODEL": Param("mf", "str", "BDLM: the domain model whose tables start the information-sharing module: mf "
                       "(collaborative filtering with real user rows, as the paper; trained on first use) or a saved "
                       "run of notebook 02 (sasrec, gru4rec: their user rows start at zero)",
                       choices=("mf", "sasrec", "gru4rec")),
    "BDLM_PROMPT": Param("id", "str", "BDLM: items in the prompt as soft tokens alone (id: the LLM sees items only through "
                      "the shared tables) or as title + soft token (unified); a user token leads either",
                      choices=("id", "unified")),
    "BDLM_ROUNDS": Param(2, "int", "BDLM: collaborative rounds after round 0 (the LLM's own SFT): LLM phase, then "
                      "domain phase (one round never lets the LLM train on tables the domain model changed)", low=1),
    "BDLM_SHARING": Param("mutual", "str", "BDLM: mutual (both KL terms, both train the shared tables), one_way (domain "
                       "-> LLM: the LLM's KL term only, the LLM reads but does not train the tables), frozen (both KL "
                       "terms, tables frozen) or none (no KL, each model its own copy)", choices=SHARINGS),
    "KL_LLM": Param(1.0, "float", "BDLM: weight of KL(domain || LLM) over the candidates in the LLM's loss", low=0),
    "KL_DOMAIN": Param(1.0, "float", "BDLM: weight of KL(LLM || domain) over the candidates in the domain model's loss",
                    low=0),
    "KL_TEMPERATURE": Param(2.0, "float", "BDLM: temperature of both candidate distributions (KL terms, ensemble)",
                         low=0.01, high=100),
    "DOMAIN_STEPS": Param(50, "int", "BDLM: domain-model Adam steps (BATCH_SIZE windows, LEARNING_RATE) per round",
                       low=1),
    "BDLM_ROUND_SAMPLES": Param(8, "int", "BDLM: training windows of each collaborative round, the first of round "
                             "0's LLM_TRAIN_SAMPLES (main run and arms alike: each round adds a KL pass over their 20 "
                             "candidates); None = all of them", low=1, optional=True),
    "BDLM_VALID_USERS": Param(8, "int", "BDLM: validation users both models are scored on after each round; None = all",
                           low=1, optional=True),
    "ENSEMBLE_WEIGHT": Param(0.5, "float", "BDLM: weight of the domain model's log-probs in the score-level ensemble",
                          low=0, high=1),
    "BDLM_ARMS": Param(list(CPU_ARMS), "list_str", "BDLM ablation arms: BDLM_SHARING values (one_way in gpu and "
                       "smoke only)", choices=SHARINGS),
}, profiles={"smoke": {"BDLM_ROUND_SAMPLES": None, "DOMAIN_STEPS": 5, "BDLM_VALID_USERS": 6,
                         "BDLM_ARMS": list(SHARINGS), "BDLM_EVAL_USERS": None, "BDLM_TRAIN_SAMPLES": None},
               "gpu": {"BDLM_ROUNDS": 3, "BDLM_ROUND_SAMPLES": 4000, "DOMAIN_STEPS": 400, "BDLM_VALID_USERS": 200,
                       "BDLM_ARMS": list(SHARINGS), "BDLM_EVAL_USERS": None, "BDLM_TRAIN_SAMPLES": None},
               "gpu-quick": {"BDLM_ROUNDS": 2, "BDLM_ROUND_SAMPLES": 500, "DOMAIN_STEPS": 200, "BDLM_VALID_USERS": 200,
                             "BDLM_EVAL_USERS": None, "BDLM_TRAIN_SAMPLES": 1000}})

SPEC = register(MethodSpec(
    "bdlm", "BDLM", "workbench.methods.bdlm.method", "08_bdlm_information_sharing",
    entries=(*llm_entries("bdlm", "BDLM LLM"), Entry("BDLM domain model", variant="domain_after"),
             Entry("BDLM ensemble", variant="ensemble_after")),
    ablation=Ablation("BDLM_ARMS", arm_changes, own_training=False, reference="mutual")))
