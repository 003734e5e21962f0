"""Sizes for unit tests that push LLM methods through fit -> rank on the smoke profile's tiny model in seconds."""

SMALL = dict(EPOCHS=1, LLM_EVAL_USERS=4, LLM_TRAIN_SAMPLES=8, GEN_EVAL_USERS=0, BDLM_ROUNDS=1, DOMAIN_STEPS=2,
             BDLM_VALID_USERS=4, SUMMARY_TOKENS=8)
