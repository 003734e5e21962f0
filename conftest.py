"""Test session settings, set before any notebook kernel starts: smoke profile, results and figures in a temp folder."""
import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="workbench-tests-")
os.environ["WORKBENCH_PROFILE"] = "smoke"
os.environ.setdefault("WORKBENCH_RESULTS", os.path.join(_TMP, "results"))
os.environ.setdefault("WORKBENCH_FIGURES", os.path.join(_TMP, "figures"))
os.environ.setdefault("WORKBENCH_CHECKPOINTS", os.path.join(_TMP, "checkpoints"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
