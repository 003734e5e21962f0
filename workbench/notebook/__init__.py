"""What the numbered notebooks call and how they are run: the setup cell (`session.start`), figures (`plots.py`),
data exploration (`explore.py`), and the papermill batch runner behind `python -m workbench run` (`batch.py`)."""
