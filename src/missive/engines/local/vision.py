"""Images for a model with a projector (`mmproj`), through llama.cpp's multimodal library (libmtmd).

An image becomes pieces of the prompt: the text tokens its projector wraps it in (none for LLaVA, e.g.
`<fake_token_around_image><global-img>` for SmolVLM) and image chunks. In the prompt's token list an
image chunk stands as `n_tokens` placeholder ids (negative, never a real token) derived from a hash
of the image's bytes: token-prefix matching (slot reuse) and the prompt cache's keys then treat two
different images as different tokens and the same image as the same tokens, with no other change.
Counting (`count_tokens`) tokenizes and preprocesses the image but never encodes it; the scheduler
encodes an image chunk when its prefill reaches it, and decodes its embeddings at its positions
(`ImageSpan`). See docs/vision.md.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import logging
import threading
import weakref
from array import array

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

from missive.engines.prompt import ImageInput
from missive.wire.errors import ApiError, invalid

log = logging.getLogger("missive.engine")

_ERROR_LEVEL = 4  # GGML_LOG_LEVEL_ERROR


@llama_cpp.llama_log_callback
def _mtmd_log(level: int, text: bytes, data: ctypes.c_void_p) -> None:
    if level == _ERROR_LEVEL and text:
        log.warning("libmtmd: %s", text.decode(errors="replace").rstrip())


class ImageSpan:
    """An image chunk at `start` in a prompt's token list, `length` tokens long; owns its mtmd chunk."""

    def __init__(self, start: int, length: int, chunk: int, path: str) -> None:
        self.start, self.length, self.chunk, self.path = start, length, chunk, path
        if chunk:
            weakref.finalize(self, mtmd.mtmd_input_chunk_free, chunk)

    @property
    def end(self) -> int:
        return self.start + self.length


def placeholders(digest: bytes, index: int, count: int) -> list[int]:
    """`count` negative ids standing for image chunk `index` of the image with this digest."""
    stream = hashlib.shake_256(digest + index.to_bytes(4, "little")).digest(4 * count)
    return [value if value < 0 else value - 2**31 for value in array("i", stream)]


class Vision:
    """One projector, loaded against a text model. Thread-safe: tokenizing (request threads) and
    encoding (the scheduler thread) take turns on the mtmd context."""

    def __init__(self, path: str, model: llama_cpp.llama_model_p, model_id: str, threads: int, n_batch: int) -> None:
        mtmd.mtmd_log_set(_mtmd_log, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_mtmd_log, ctypes.c_void_p(0))
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        params.warmup = False
        self.ctx = mtmd.mtmd_init_from_file(path.encode(), model, params)
        if not self.ctx:
            raise RuntimeError(f"model {model_id}: could not load the projector {path} (see the libmtmd error above)")
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise RuntimeError(f"model {model_id}: the projector {path} has no vision encoder")
        if mtmd.mtmd_decode_use_mrope(self.ctx):
            # The scheduler's positions are token indices; M-RoPE (Qwen2-VL and later) places an image's
            # tokens on a 2D grid with fewer positions than tokens. Refused rather than decoded wrongly.
            self.close()
            raise RuntimeError(
                f"model {model_id}: the projector uses M-RoPE positions (Qwen2-VL family), "
                "which the embedded engine does not support"
            )
        self.non_causal = bool(mtmd.mtmd_decode_use_non_causal(self.ctx, None))
        self.n_batch = n_batch
        self.model_id = model_id
        self.lock = threading.Lock()
        try:
            self._check_positions()
        except RuntimeError:
            self.close()
            raise

    def pieces(self, image: ImageInput) -> list[list[int] | tuple[int, int]]:
        """The image's prompt pieces, in order: text tokens (a list), or an image chunk (a pointer the caller
        owns, and its token count)."""
        pixels, width, height = _decode(image)
        found = self._tokenize(pixels, width, height, image.path)
        too_long = [n for piece in found if isinstance(piece, tuple) and (n := piece[1]) > self.n_batch]
        if self.non_causal and too_long:
            _free(found)
            raise invalid(
                f"{image.path}: this image takes {too_long[0]} tokens; model {self.model_id} reads an image in "
                f"one pass of at most {self.n_batch} (raise local.prefill_chunk)"
            )
        return found

    def _tokenize(self, pixels: bytes, width: int, height: int, path: str) -> list[list[int] | tuple[int, int]]:
        data = (ctypes.c_ubyte * len(pixels)).from_buffer_copy(pixels)
        found: list[list[int] | tuple[int, int]] = []
        with self.lock:
            bitmap = mtmd.mtmd_bitmap_init(width, height, data)
            chunks = mtmd.mtmd_input_chunks_init()
            try:
                part = mtmd.mtmd_input_part(text=None, bitmap=bitmap)
                parts = (ctypes.POINTER(mtmd.mtmd_input_part) * 1)(ctypes.pointer(part))
                status = mtmd.mtmd_tokenize_from_parts(self.ctx, chunks, parts, 1, False)
                if status != 0:
                    raise invalid(f"{path}: the image could not be read by the model's projector ({status})")
                for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                    chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                    kind = mtmd.mtmd_input_chunk_get_type(chunk)
                    if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                        n = ctypes.c_size_t(0)
                        tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                        found.append([tokens[j] for j in range(n.value)])
                    elif kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                        n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                        if mtmd.mtmd_input_chunk_get_n_pos(chunk) != n_tokens:  # see `_check_positions`
                            raise invalid(f"{path}: model {self.model_id} places image tokens on fewer positions")
                        found.append((mtmd.mtmd_input_chunk_copy(chunk), n_tokens))
            except BaseException:
                _free(found)
                raise
            finally:
                mtmd.mtmd_input_chunks_free(chunks)
                mtmd.mtmd_bitmap_free(bitmap)
        return found

    def _check_positions(self) -> None:
        """Tokenize a blank image once: every image chunk must take one position per token, since the
        scheduler's positions are token indices."""
        try:
            _free(self._tokenize(bytes(64 * 64 * 3), 64, 64, "probe"))
        except ApiError as error:
            raise RuntimeError(f"model {self.model_id}: the projector is not supported here ({error})") from None

    def decode(self, span: ImageSpan, lctx: llama_cpp.llama_context_p, seq_id: int) -> None:
        """Encode the image chunk and decode its embeddings into sequence `seq_id` at its positions."""
        with self.lock:
            if mtmd.mtmd_encode_chunk(self.ctx, span.chunk) != 0:
                raise RuntimeError(f"{span.path}: the projector could not encode the image")
            embeddings = mtmd.mtmd_get_output_embd(self.ctx)
            new_n_past = llama_cpp.llama_pos(0)
            status = mtmd.mtmd_helper_decode_image_chunk(
                self.ctx, lctx, span.chunk, embeddings, span.start, seq_id, self.n_batch,
                ctypes.byref(new_n_past), mtmd.mtmd_helper_post_decode_callback(), None,
            )
        if status != 0 or new_n_past.value != span.end:
            raise RuntimeError(f"{span.path}: decoding the image failed ({status}, at {new_n_past.value})")

    def close(self) -> None:
        if self.ctx:
            mtmd.mtmd_free(self.ctx)
            self.ctx = None


def _free(pieces: list[list[int] | tuple[int, int]]) -> None:
    for piece in pieces:
        if isinstance(piece, tuple):
            mtmd.mtmd_input_chunk_free(piece[0])


def digest(image: ImageInput) -> bytes:
    return hashlib.blake2b(image.data, digest_size=16).digest()


def _decode(image: ImageInput) -> tuple[bytes, int, int]:
    """RGB pixels of the image (a GIF's first frame). Undecodable data is the request's fault."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            rgb = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid(f"{image.path}: the image data could not be decoded ({type(exc).__name__})") from exc
    return rgb.tobytes(), rgb.width, rgb.height
