"""A vision-language model behind one `Policy`: loading it (4-bit on a GPU, a LoRA adapter on the
language model), the model families, the decoders that sample from it, gradient checkpointing."""
