"""``sinkchat bench``: the attention-sink experiments, reproduced on any GGUF model.

Every command compares cache policies on the same llama.cpp engine, side by side in one
run, and writes CSV (always) and PNG plots (with the ``bench`` extra: matplotlib).

- :mod:`.ppl`: log-perplexity and memory against input length over a long text.
- :mod:`.endless`: endless generation, loss of fluency, per-token latency.
- :mod:`.chat_bench`: a long multi-turn conversation, failed replies per policy.
- :mod:`.speed`: decode speed and the cost of a context shift, as ratios.
"""
