"""Segmentation and reconstruction losses (BCE-with-logits as in the paper, Dice optional)."""

from __future__ import annotations


def soft_dice_loss(logits, target, eps: float = 1.0):
    """1 - soft Dice, averaged over the batch."""
    import torch

    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def segmentation_loss(logits, target, dice: bool = False):
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(logits, target)
    return loss + soft_dice_loss(logits, target) if dice else loss


def reconstruction_loss(recon, target):
    import torch.nn.functional as F

    return F.mse_loss(recon, target)
