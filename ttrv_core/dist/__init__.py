"""One run on K processes (torch.distributed): ranks, collectives and failures (parallel.py), and
the language model's layers sharded over the ranks (fsdp.py)."""
