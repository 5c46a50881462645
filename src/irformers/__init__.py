"""irformers: SemanIR and Hi-IR image-restoration transformers."""

__version__ = "0.1.0"
