"""User encoders: padded item-vector sequences -> causal hidden states. Importing registers them."""

from transrec.models.user_encoders.gru4rec import GRU4Rec
from transrec.models.user_encoders.nextitnet import NextItNet
from transrec.models.user_encoders.sasrec import SASRec

__all__ = ["GRU4Rec", "NextItNet", "SASRec"]
