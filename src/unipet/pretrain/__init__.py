"""Self-aligning cross-modal pre-training of the PET and CT encoders of the ``anatomy`` model.

- ``unipet.pretrain.masked``: masking, masked reconstruction loss, the pre-training module.
- ``unipet.pretrain.align``: the shared latent space and the cross-modal alignment loss.
- ``unipet.pretrain.loop``: ``PretrainConfig`` and ``pretrain``, a job of the one training loop
  (``unipet.train.engine``) writing an encoder checkpoint (``unipet anatomy pretrain``).
- ``unipet.pretrain.organs``: MAST-Pro's anatomical encoder pre-trained as an organ-map autoencoder
  (``unipet mastpro pretrain-anatomy``).
"""
from unipet.pretrain.loop import PretrainConfig, evaluate_pretrainer, pretrain

__all__ = ["PretrainConfig", "evaluate_pretrainer", "pretrain"]
