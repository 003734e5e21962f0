"""Models: conventional sequential recommenders (seqrec), and later the LLMs, projector and bridge."""
