"""Item feature extraction: ``mmseqrec extract`` writes frozen text and image features into a
prepared domain.

- ``store.py``: the resumable writer (per-feature work folder with a memory-mapped array and a
  progress file; atomic rename into ``features/`` and a manifest update at the end).
- ``clip.py``: open_clip text and image towers (MISSRec's CLIP ViT-B/32 features).
- ``text.py``: Hugging Face ``AutoModel`` text encoders with [CLS] or mean pooling (UniSRec's BERT
  [CLS], sentence-transformers models such as all-MiniLM-L6-v2).
- ``images.py``: where an item's image comes from (a local folder or the items table's URL) and
  decoding; failures are reported, never turned into vectors.
- ``augment.py``: the offline word-drop text augmentation used in pretraining.
- ``extract.py``: ties them together; ``register`` adds the ``mmseqrec extract`` command.

Nothing here is imported by training: torch models for extraction (open_clip, transformers) are
optional extras and only loaded when ``mmseqrec extract`` runs.
"""
