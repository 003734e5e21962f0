"""Prompt builders: keyvalue (MKV), and later summary (LLM-TRSR) and unified (RSLLM/BDLM soft tokens)."""
