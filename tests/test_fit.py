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


# -- the memory of a context, checked before llama.cpp allocates it ---------------------------

MiB = 1 << 20


def test_context_need_is_what_llama_cpp_allocates(smollm2_path: Path, gemma_path: Path) -> None:
    """The sizes llama.cpp logs for these contexts (``llama_kv_cache: size``, ``CPU compute buffer size``)."""
    from models.fit import context_need
    from models.gguf_meta import read_gguf

    smol = read_gguf(smollm2_path)
    need = context_need(smol.metadata, smol.architecture, 4096)
    assert need is not None and need.kv_cache == 90 * MiB
    assert 98.25 * MiB <= need.compute <= 1.1 * 98.25 * MiB
    no_flash = context_need(smol.metadata, smol.architecture, 65536, flash_attn=False)
    assert no_flash is not None and no_flash.kv_cache == 1440 * MiB
    assert 1286.38 * MiB <= no_flash.compute <= 1.1 * 1286.38 * MiB  # every head's scores against the cache

    gemma = read_gguf(gemma_path)  # 3 global layers, 15 sliding-window ones (window 512)
    small = context_need(gemma.metadata, gemma.architecture, 32768, swa_full=False)
    full = context_need(gemma.metadata, gemma.architecture, 32768, swa_full=True)
    assert small is not None and small.kv_cache == (96 + 15) * MiB  # the window layers keep 1,024 cells
    assert full is not None and full.kv_cache == (96 + 480) * MiB
    assert 514.5 * MiB <= full.compute <= 1.1 * 514.5 * MiB  # a batch of logits over 262,144 tokens


def test_a_context_beyond_the_memory_is_refused_with_the_numbers_and_a_size_that_fits(smollm2_path: Path) -> None:
    from models.errors import ContextTooLargeError, ModelError
    from models.fit import check_context
    from models.gguf_meta import read_gguf
    from models.options import LoadOptions

    info = read_gguf(smollm2_path)
    laptop = Hardware(ram_available=8 * GB)
    with pytest.raises(ContextTooLargeError) as caught:
        check_context(info, LoadOptions(n_ctx=1_000_000), hardware=laptop)
    message = str(caught.value)
    assert isinstance(caught.value, ModelError) and "\n" not in message
    assert "a context of 1000000 tokens" in message and "needs about 23.1 GB" in message
    assert "KV cache 23.0 GB" in message and "6.8 GB" in message and "8.0 GB available RAM" in message
    suggested = int(message.split("choose n_ctx ")[1].split()[0])
    assert 250_000 <= suggested < 1_000_000 and suggested % 1024 == 0
    fitting = check_context(info, LoadOptions(n_ctx=suggested), hardware=laptop)
    assert fitting is not None and fitting.total <= 0.85 * 8 * GB

    nothing = Hardware(ram_available=50_000_000)
    with pytest.raises(ContextTooLargeError, match="not even 256 tokens fit"):
        check_context(info, LoadOptions(n_ctx=4096), hardware=nothing)


def test_the_sizes_people_use_are_not_refused(smollm2_path: Path, gemma_path: Path) -> None:
    """The default 4096 and what the tests and benches use, on a machine with 2 GB to spare."""
    from models.fit import check_context
    from models.gguf_meta import read_gguf
    from models.options import LoadOptions

    modest = Hardware(ram_available=2 * GB)
    for path in (smollm2_path, gemma_path):
        info = read_gguf(path)
        for n_ctx in (64, 128, 256, 320, 512, 1024, 2048, 4096, 8192):
            for swa_full in (None, False, True):
                options = LoadOptions(n_ctx=n_ctx, swa_full=swa_full)
                assert check_context(info, options, hardware=modest) is not None, (path.name, n_ctx)
                check_context(info, options, weights_loaded=True, n_gpu_layers=0, hardware=modest)
    gemma = read_gguf(gemma_path)  # its whole trained context, with the small sliding-window cache
    check_context(gemma, LoadOptions(n_ctx=32768, swa_full=False), hardware=modest)


def test_on_a_gpu_the_offloaded_part_is_measured_against_its_free_memory(smollm2_path: Path) -> None:
    from models.errors import ContextTooLargeError
    from models.fit import check_context
    from models.gguf_meta import read_gguf
    from models.options import LoadOptions

    info = read_gguf(smollm2_path)
    card = Hardware(ram_available=64 * GB, gpus=[GPUMemory(name="CUDA0", free=2 * GB, total=8 * GB)])
    options = LoadOptions(n_ctx=131072)  # 3 GB of cache
    with pytest.raises(ContextTooLargeError, match=r"weights 98\.4 MB \+ KV cache 3\.0 GB .*free memory of CUDA0"):
        check_context(info, options, n_gpu_layers=-1, hardware=card)
    check_context(info, options, n_gpu_layers=0, hardware=card)  # all on the CPU: the 64 GB of RAM
    check_context(info, options.model_copy(update={"offload_kqv": False}), n_gpu_layers=-1, hardware=card)
    check_context(info, LoadOptions(n_ctx=32768), n_gpu_layers=-1, hardware=card)


def test_a_sliding_window_model_gets_the_small_cache_rather_than_a_refusal(gemma_path: Path) -> None:
    """Chat.load decides swa_full first: a full-size cache only when it fits, so the check then passes."""
    from models.errors import ContextTooLargeError
    from models.fit import check_context
    from models.gguf_meta import read_gguf
    from models.options import LoadOptions
    from models.swa import choose_swa_full

    info = read_gguf(gemma_path)
    checked: list[bool] = []
    for ram in (1 * GB, 2 * GB, 4 * GB):
        hardware = Hardware(ram_available=ram)
        for n_ctx in (2048, 8192, 32768, 131072):
            try:
                check_context(info, LoadOptions(n_ctx=n_ctx, swa_full=False), hardware=hardware)
            except ContextTooLargeError:
                continue  # too large either way
            choice = choose_swa_full(info, n_ctx, hardware=hardware)
            check_context(info, LoadOptions(n_ctx=n_ctx, swa_full=choice.swa_full), hardware=hardware)
            checked.append(choice.swa_full)
    assert True in checked and False in checked
