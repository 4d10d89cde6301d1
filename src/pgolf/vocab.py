"""Special token ids of every pgolf tokenizer (the contest's SentencePiece settings,
seed-techniques §2.3): pad 0, BOS 1, EOS 2, unk 3. Every document starts with BOS."""

from __future__ import annotations

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
