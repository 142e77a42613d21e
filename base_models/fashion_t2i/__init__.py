"""Text-to-image Fashion-MNIST (issue 14): captions whose attributes are realised on the image
(``captions``), a word-level text tokenizer in DiMOO's layout (``tokenizer``) and a small CLIP
trained with open_clip on the same captions (``clip``, CLI entry in ``commands``)."""
