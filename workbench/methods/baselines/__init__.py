"""Conventional sequential recommenders (declared here): Popularity, SASRec, GRU4Rec and MF.

The networks and their trainer are `models.py`; the recommenders on the method contract `recommenders.py`.  Their
parameters (EPOCHS, EMBED_DIM, ...) are in the shared table (`config.py`): RSLLM reads a saved SASRec run's item
table and BDLM a saved run as its domain model, with the same parameters.  Reproduce: `python -m workbench run 02`.
"""
from ...recommender import Entry, MethodSpec, register

MODULE, NOTEBOOK = "workbench.methods.baselines.recommenders", "02_baselines"
for _name, _label in (("popularity", "Popularity"), ("sasrec", "SASRec"), ("gru4rec", "GRU4Rec")):
    register(MethodSpec(_name, _label, MODULE, NOTEBOOK, entries=(Entry(_label),)))
register(MethodSpec("mf", "MF", MODULE, NOTEBOOK))  # BDLM's optional domain model: no comparison row of its own
