"""BEAT stage 2: behavior tokens read by a frozen LM (projector, SAR, training, generation)."""
