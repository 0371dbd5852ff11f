"""ttrv_core: test-time reinforcement learning (TTRV, Singh et al. 2025) for VLMs.

A stack of layers, every import running down (docs/ARCHITECTURE.md): config < errors, events,
problems < demos < dist < tasks < inputs < model < sampling < method < runs < cli, app < research."""
