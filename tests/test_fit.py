"""Memory estimates and the fit-to-hardware recommendation."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.fit import GPUMemory, Hardware, KVShape, estimate, fit, kv_shape, recommend

GB = 10**9


def test_kv_cache_is_exact_with_the_gguf_shape() -> None:
    # Llama-3.1-8B: 32 layers, 8 KV heads of 128: 128 KiB per token in f16.
    shape = KVShape(n_layer=32, n_kv_heads=8, head_dim=128)
    e = estimate(4_920_000_000, 8192, shape=shape)
    assert e.exact_kv and e.kv_cache == 131072 * 8192
    assert e.total > e.weights + e.kv_cache  # plus compute buffers
    q8 = estimate(4_920_000_000, 8192, shape=shape, kv_bytes_per_element=1.0625)
    assert q8.kv_cache < e.kv_cache * 0.6


def test_kv_shape_from_metadata() -> None:
    meta = {"llama.block_count": 30, "llama.attention.head_count": 9, "llama.attention.head_count_kv": 3,
            "llama.embedding_length": 576}  # fmt: skip
    assert kv_shape(meta, "llama") == KVShape(n_layer=30, n_kv_heads=3, head_dim=64)
    assert kv_shape({"gemma.block_count": 2}, "gemma") is None
    assert kv_shape(meta, None) is None


def test_estimate_without_metadata_is_conservative_for_current_models() -> None:
    # (parameters, real f16 KV bytes per token) of well-known GQA models.
    known = [(1.24e9, 32_768), (8.03e9, 131_072), (7.6e9, 57_344), (70.6e9, 327_680), (0.135e9, 23_040)]
    for params, per_token in known:
        guess = estimate(1, 1000, parameters=int(params)).kv_cache / 1000
        assert per_token * 0.8 <= guess <= per_token * 3, (params, guess)


def test_fit_against_ram_and_gpu() -> None:
    laptop = Hardware(ram_available=16 * GB)
    assert fit(8 * GB, laptop) == "fits"
    assert fit(15 * GB, laptop) == "tight"
    assert fit(30 * GB, laptop) == "too big"
    gpu = Hardware(ram_available=64 * GB, gpus=[GPUMemory(name="CUDA0", free=10 * GB, total=12 * GB)])
    assert gpu.budget == 10 * GB and gpu.where == "CUDA0"
    assert fit(8 * GB, gpu) == "fits"
    assert fit(20 * GB, gpu) == "tight"  # runs with some layers on the CPU
    assert fit(60 * GB, gpu) == "too big"


def test_recommend_prefers_q4_k_m_then_the_largest_that_fits() -> None:
    quants = ["Q2_K", "Q4_K_M", "Q6_K", "Q8_0"]
    sizes = [3, 5, 7, 9]
    assert recommend(quants, sizes, ["fits", "fits", "fits", "tight"]) == 1
    assert recommend(quants, sizes, ["fits", "too big", "too big", "too big"]) == 0
    assert recommend(["Q5_K_M", "Q6_K", "Q8_0"], [5, 6, 8], ["fits", "fits", "tight"]) == 1
    assert recommend(quants, sizes, ["tight", "tight", "too big", "too big"]) == 0
    assert recommend(quants, sizes, ["too big"] * 4) is None


@pytest.mark.slow
def test_the_estimate_covers_what_llama_cpp_really_uses(smollm2_path: Path) -> None:
    import subprocess
    import sys

    from models.gguf_meta import read_gguf

    measure = (  # in a fresh process, so no earlier model's memory is reused
        "import psutil, sys\n"
        "from sinkchat.chat import Chat\n"
        "p = psutil.Process(); before = p.memory_info().rss\n"
        "chat = Chat.load(sys.argv[1], n_ctx=4096)\n"
        "list(chat.generate('hello ' * 200, max_tokens=4))\n"  # touch the weights and the cache
        "print(p.memory_info().rss - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", measure, str(smollm2_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    used = int(done.stdout.split()[-1])
    info = read_gguf(smollm2_path)
    guess = estimate(info.file_size, 4096, shape=kv_shape(info.metadata, info.architecture)).total
    assert used <= guess <= 2 * used, (used, guess)  # measured here: 210 MiB used, 260 MiB estimated
