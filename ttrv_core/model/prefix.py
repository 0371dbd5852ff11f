"""`Prefix`: prompts prefilled for one decode batch, the state every decoder (decode.py,
prefix_decode.py) reads: their caches by groups of one length, the rows per prompt, each row's
positions, and the left padding that lets prompts of several lengths decode together."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prefix:
    """Prefilled prompts under one decode batch of R = rows x prompts answer rows: the rows of
    a prompt are consecutive, prompts in their order. A group is prompts prefilled together
    (one length); its cache holds one row per prompt when shared, else `rows` per prompt."""
    groups: list[tuple[object, int, int]]  # (transformers Cache, prompts in it, their length), in order
    rows: int                              # answer rows per prompt
    shared: bool
    next_pos: torch.Tensor                 # (R,) position of each row's first answer token
    mrope: bool                            # 3D positions (Qwen): equal coordinates on answer tokens

    @property
    def length(self) -> int:
        """Columns of the decode cache before the answers: the longest prompt."""
        return max(p for _, _, p in self.groups)

    @property
    def n_rows(self) -> int:
        return self.next_pos.shape[0]

    def positions(self, t: int) -> torch.Tensor:
        """Positions of answer token t of every row: (3, R, 1) mrope or (R, 1)."""
        pos = (self.next_pos + t).view(-1, 1)
        return pos.view(1, -1, 1).expand(3, -1, -1) if self.mrope else pos

    def padding(self) -> torch.Tensor | None:
        """(R, length) True on a row's left padding; None when every prompt has the full length."""
        if len({p for _, _, p in self.groups}) == 1:
            return None
        dev = self.next_pos.device
        cols = torch.arange(self.length, device=dev)
        lens = torch.cat([torch.full((k * self.rows,), p, device=dev) for _, k, p in self.groups])
        return cols.view(1, -1) < (self.length - lens).view(-1, 1)

    def cache(self):
        """A dynamic cache of R rows: each group's rows replicated (shared) and left-padded to
        `length`, groups concatenated. One group: its own cache object, replicated in place."""
        for c, _, _ in self.groups:
            if self.shared:
                c.batch_repeat_interleave(self.rows)
        if len(self.groups) == 1:
            return self.groups[0][0]
        longest = max(self.groups, key=lambda g: g[2])[0]  # its layers' bookkeeping (sliding windows) fits all
        for i, merged in enumerate(longest.layers):
            parts = [c.layers[i] for c, _, _ in self.groups]  # a sliding layer keeps at most its window
            width = max(part.keys.shape[-2] for part in parts)
            merged.keys = torch.cat([left_pad(part.keys, width) for part in parts])
            merged.values = torch.cat([left_pad(part.values, width) for part in parts])
        return longest


def left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, P, D) -> (B, H, width, D), zeros on the left (masked out by Prefix.padding)."""
    return x if x.shape[-2] == width else torch.nn.functional.pad(x, (0, 0, width - x.shape[-2], 0))
