"""`Policy`: a loaded VLM with its LoRA adapter, processor and decoding constants, and the switches
the method needs on it: bf16 autocast, the adapter off (the reference policy), the decode state.
loading.py makes one."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from ttrv_core.model.decode import Decoders
from ttrv_core.model.families import Family


@dataclass
class Policy:
    """A loaded model with its LoRA adapter, processor and decoding constants."""
    model: torch.nn.Module  # peft PeftModel over the HF model
    base: torch.nn.Module   # the HF *ForConditionalGeneration inside it
    processor: object
    family: Family
    device: torch.device
    eos_ids: torch.Tensor   # (E,) token ids that end an answer
    suppress: torch.Tensor  # (V,) bool: tokens never sampled (special tokens but EOS)
    pad_id: int
    max_pixels: int = 0     # images are downscaled to at most this many pixels (0: no limit)
    precision: str = "fp32"
    autocast_dtype: torch.dtype | None = None  # see autocast()
    answers_per_forward: int = 0  # training forwards hold this many answers (0: all G); grpo.update halves it on OOM
    vision_trainable: bool = False  # a loaded adapter trains weights outside the language model (prompt.Prompt.encoded)
    pack_answers: bool = True
    """Shared-prefix training forwards: the prompt and the G answers packed in one row (grpo._packed_logits);
    False: through the prompt's KV cache replicated G times (what bench/bench_step.py compares it with)."""
    lockstep: bool = False
    """Decode max_new_tokens steps whatever the rows do (rows that ended decode padding, masked as
    always): the same number of forwards on every process, as FSDP's per-layer all-gathers need
    (fsdp.shard_policy sets it). The rows' tokens and log-probs are those without it."""
    gathered: dict | None = field(default=None, repr=False)
    """Under FSDP: the full LoRA weights (name -> tensor) after the last step, what save_adapter
    writes (each process holds shards only; the engine gathers them on every process)."""
    decoders: Decoders = field(default_factory=Decoders, repr=False)
    """The decode step's kept state (decode.py): the engine releases it at its phase boundaries."""
    _lora_layers: list | None = field(default=None, repr=False)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations have in a forward (attention masks are built in it)."""
        if self.autocast_dtype is not None:
            return self.autocast_dtype
        return self.base.dtype if self.base.dtype.is_floating_point else torch.float32

    def autocast(self):
        """bf16 autocast for 4-bit and bf16 models on CUDA, a no-op elsewhere. The LoRA
        weights stay fp32 (what AdamW updates) but compute in bf16 like the rest of the
        model: no fp32 copies of every LoRA layer's input kept for backward (about 2 GiB
        on a 3B step) and no fp32 matmuls in the decode step (bench/RESULTS.md)."""
        if self.autocast_dtype is None:
            return nullcontext()
        # no cache of the bf16 weight copies: a CUDA graph of the decode step must cast the
        # live fp32 weights at each replay, not keep reading a copy freed with the cache
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=False)

    @contextmanager
    def adapter_off(self):
        """The base model, i.e. the reference policy: peft's per-layer switch
        (BaseTunerLayer.enable_adapters) over the LoRA layers, found once. peft's own
        `disable_adapter()` does the same but walks every module of the model (and formats
        their reprs) on each call: ~0.1 s on the 36 layers of a 3B model, a sixth of a GRPO
        update on an H100 (bench/RESULTS.md), hence the kept list of layers."""
        layers = self._layers()
        was = [not m.disable_adapters for m in layers]
        try:
            for m in layers:
                self._switch(m, False)
            yield
        finally:
            for m, on in zip(layers, was):
                self._switch(m, on)

    def _switch(self, layer, on: bool) -> None:
        """peft's switch also sets the LoRA weights' requires_grad; under FSDP (lockstep) the flag
        alone: FSDP2 gives a layer's gathered weights the requires_grad of their first gathering
        (in the reference forward: False), and training would then get no gradients."""
        if self.lockstep:
            layer._disable_adapters = not on
        else:
            layer.enable_adapters(on)

    @property
    def adapter_on(self) -> bool:
        """False inside adapter_off(). A recorded decode step (a CUDA graph) holds the LoRA
        products or not, as the switch was then: decode.py keeps one per state."""
        layers = self._layers()
        return not layers or not layers[0].disable_adapters

    def _layers(self) -> list:
        if self._lora_layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer
            self._lora_layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        return self._lora_layers

    @property
    def tokenizer(self):
        return self.processor.tokenizer
