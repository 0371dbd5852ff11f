"""ttrv_core: test-time reinforcement learning (TTRV, Singh et al. 2025) for VLMs."""
