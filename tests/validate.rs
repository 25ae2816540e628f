//! Corpus of manifests and `moor validate` behaviour.
