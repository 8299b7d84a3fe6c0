"""Models and the llama.cpp backend: GGUF files, decoding, KV-cache operations, sampling.

Knows nothing of sinkchat's policy or UI.  llama_cpp is imported lazily by the modules
that need it, so that importing this package stays cheap.
"""
