"""A vision projector GGUF with generated weights, for a text model that has none.

No vision GGUF can be downloaded here, so the vision tests build the smallest projector that libmtmd
loads for the default model: a LLaVA-style ("mlp") CLIP encoder, 32x32 px input in 8x8 patches
(16 image tokens), two encoder layers of width 32 (the second-to-last layer's output feeds the
projector, as in LLaVA), and a two-layer MLP into the text model's embedding width. The weights are
random, so what the model "sees" is noise: this proves placement, accounting, caching and errors,
never answer quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
WIDTH = 32
FEED_FORWARD = 64
LAYERS = 2
HIDDEN = 64


def text_embedding_width(model: Path) -> int:
    """`<arch>.embedding_length` from the text model's GGUF header."""
    import gguf

    reader = gguf.GGUFReader(str(model))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    return int(reader.fields[f"{arch}.embedding_length"].parts[-1][0])


def write_projector(path: Path, text_model: Path, seed: int = 0) -> Path:
    import gguf

    n_embd_text = text_embedding_width(text_model)
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("general.name", "missive test projector (generated weights)")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", FEED_FORWARD)
    writer.add_uint32("clip.vision.block_count", LAYERS)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_uint32("clip.vision.attention.head_count", 2)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    # numpy shapes are ggml's ne reversed
    writer.add_tensor("v.patch_embd.weight", weights(WIDTH, 3, PATCH_SIZE, PATCH_SIZE))
    writer.add_tensor("v.patch_embd.bias", weights(WIDTH))
    writer.add_tensor("v.position_embd.weight", weights(IMAGE_TOKENS, WIDTH))
    writer.add_tensor("v.pre_ln.weight", np.ones(WIDTH, np.float32))
    writer.add_tensor("v.pre_ln.bias", np.zeros(WIDTH, np.float32))
    for layer in range(LAYERS):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{layer}.{name}.weight", weights(WIDTH, WIDTH))
            writer.add_tensor(f"v.blk.{layer}.{name}.bias", weights(WIDTH))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{layer}.{name}.weight", np.ones(WIDTH, np.float32))
            writer.add_tensor(f"v.blk.{layer}.{name}.bias", np.zeros(WIDTH, np.float32))
        writer.add_tensor(f"v.blk.{layer}.ffn_up.weight", weights(FEED_FORWARD, WIDTH))
        writer.add_tensor(f"v.blk.{layer}.ffn_up.bias", weights(FEED_FORWARD))
        writer.add_tensor(f"v.blk.{layer}.ffn_down.weight", weights(WIDTH, FEED_FORWARD))
        writer.add_tensor(f"v.blk.{layer}.ffn_down.bias", weights(WIDTH))
    writer.add_tensor("mm.0.weight", weights(HIDDEN, WIDTH))
    writer.add_tensor("mm.0.bias", weights(HIDDEN))
    writer.add_tensor("mm.2.weight", weights(n_embd_text, HIDDEN))
    writer.add_tensor("mm.2.bias", weights(n_embd_text))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
