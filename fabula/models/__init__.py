"""Generative stories."""

from fabula.models.docnade import DocNADE
from fabula.models.fdarn import FDARN
from fabula.models.gmvae import GMVAE
from fabula.models.gsm import GSM
from fabula.models.lda import LDA
from fabula.models.linear_gaussian import LinearGaussian
from fabula.models.lstm_vae import LSTMVAE
from fabula.models.nvdm import NVDM
from fabula.models.rnnlm import RNNLM
from fabula.models.rsm import ReplicatedSoftmax
from fabula.models.sbn import SigmoidBeliefNet
from fabula.models.story import DATA_DIM, Story

__all__ = [
    "DATA_DIM",
    "DocNADE",
    "FDARN",
    "GMVAE",
    "GSM",
    "LDA",
    "LSTMVAE",
    "LinearGaussian",
    "NVDM",
    "RNNLM",
    "ReplicatedSoftmax",
    "SigmoidBeliefNet",
    "Story",
]
