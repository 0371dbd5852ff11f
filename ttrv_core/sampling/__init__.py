"""An image prompt encoded once (model_inputs.py, prompt.py), kept for the run (prompt_cache.py), and
N answers sampled from it over one prefill (rollout.py)."""
