"""Images on the embedded engine (libmtmd), through the official SDK, against the shared server's
`smollm2-vision`: the default GGUF with a projector of generated weights (tests/projector.py).

What this proves: image blocks are accepted where they stand (message content, tool results), reach
the model as its projector's embeddings at their place in the sequence (a different image, or the
same images in another order, changes the greedy output), count as the projector's tokens in
`input_tokens` exactly as `count_tokens` says, and take part in prompt caching by their bytes; bad
image data is a 400 naming the block. What it cannot prove: that a model understands an image (the
weights are noise). docs/vision.md.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import queue
import re
import uuid
from collections.abc import Iterator

import anthropic
import numpy as np
import pytest
from conftest import COUNTING
from PIL import Image
from projector import IMAGE_TOKENS, write_projector

from missive import metrics
from missive.engines.base import Generation
from missive.engines.local import vision
from missive.engines.local.default_model import default_model_path
from missive.engines.local.engine import LocalEngine
from missive.engines.local.passes import Passes, PassShapes, reusable
from missive.engines.local.sampling import Sampling
from missive.engines.local.scheduler import Job
from missive.engines.local.vision import placeholders
from missive.engines.prompt import ImageInput
from missive.settings import LocalEngineSettings, ModelSettings
from missive.wire import requests as rq
from missive.wire import validate
from missive.wire.errors import ApiError
from missive.wire.events import Delta, Finished

MODEL = "smollm2-vision"
QUESTION = {"type": "text", "text": "Describe the picture in one sentence."}


def png(seed: int, size: tuple[int, int] = (40, 30)) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def image(seed: int, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": png(seed)}}


def user(*blocks: dict) -> list[dict]:
    return [{"role": "user", "content": list(blocks)}]


def count(client: anthropic.Anthropic, messages: list[dict], **extra: object) -> int:
    return client.messages.count_tokens(model=MODEL, messages=messages, **extra).input_tokens


def answer(client: anthropic.Anthropic, messages: list[dict], **extra: object) -> anthropic.types.Message:
    return client.messages.create(model=MODEL, max_tokens=8, extra_body={"temperature": 0}, messages=messages, **extra)


def test_the_card_says_images(client: anthropic.Anthropic) -> None:
    assert client.models.retrieve(MODEL).capabilities.image_input.supported is True
    assert client.models.retrieve("smollm2-135m-instruct").capabilities.image_input.supported is False


def test_an_image_counts_as_its_projector_tokens(client: anthropic.Anthropic) -> None:
    one = user(image(1), QUESTION)
    two = user(image(1), image(2), QUESTION)
    # Between two images the only text is the blocks' separator ("\n\n", one token of SmolLM2).
    assert count(client, two) - count(client, one) == IMAGE_TOKENS + 1
    response = answer(client, two)
    assert response.usage.input_tokens == count(client, two)
    assert response.content and response.content[0].type == "text"


def test_images_are_seen_where_they_stand(client: anthropic.Anthropic) -> None:
    """Greedy output depends on which image is there and on the order of images: the embeddings are
    decoded at the images' positions, not dropped or appended."""
    first = answer(client, user(image(3), image(4), QUESTION)).content[0].text
    assert answer(client, user(image(3), image(4), QUESTION)).content[0].text == first
    assert answer(client, user(image(4), image(3), QUESTION)).content[0].text != first
    assert answer(client, user(image(5), image(4), QUESTION)).content[0].text != first


def test_an_image_in_a_tool_result(client: anthropic.Anthropic) -> None:
    tools = [{"name": "screenshot", "description": "Take a screenshot.", "input_schema": {"type": "object"}}]

    def conversation(*result: dict) -> list[dict]:
        return [
            {"role": "user", "content": "Take a screenshot and tell me what it shows."},
            {"role": "assistant",
             "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": list(result)}]},
        ]

    text = {"type": "text", "text": "Here it is."}
    with_image = conversation(text, image(6))
    grown = count(client, with_image, tools=tools) - count(client, conversation(text), tools=tools)
    assert IMAGE_TOKENS <= grown <= IMAGE_TOKENS + 2  # and the separator before it
    response = answer(client, with_image, tools=tools)
    assert response.usage.input_tokens == count(client, with_image, tools=tools)


def test_cached_prefixes_stop_at_a_different_image(client: anthropic.Anthropic) -> None:
    """The cache keys hold the image's bytes: the same image is read from the cache past it, another
    image only up to the breakpoint before it."""
    system = [{
        "type": "text",
        "text": f"Session {uuid.uuid4()}. You describe pictures for people who cannot see them. " * 3,
        "cache_control": {"type": "ephemeral"},
    }]
    cached_question = {**QUESTION, "cache_control": {"type": "ephemeral"}}

    def usage(*blocks: dict) -> anthropic.types.Usage:
        return answer(client, user(*blocks), system=system).usage

    system_only = usage({"type": "text", "text": "Hello."})
    assert system_only.cache_read_input_tokens == 0 and system_only.cache_creation_input_tokens > 0
    system_prefix = system_only.cache_creation_input_tokens

    written = usage(image(7), cached_question)
    assert written.cache_read_input_tokens == system_prefix
    past_the_image = system_prefix + written.cache_creation_input_tokens
    assert written.cache_creation_input_tokens > IMAGE_TOKENS

    same = usage(image(7), cached_question, {"type": "text", "text": "Be brief."})
    assert same.cache_read_input_tokens == past_the_image

    other = usage(image(8), cached_question)
    assert other.cache_read_input_tokens == system_prefix
    assert other.cache_creation_input_tokens == written.cache_creation_input_tokens

    # A breakpoint on the image block itself: the entry ends right after the image.
    cached_image = {**image(9), "cache_control": {"type": "ephemeral"}}
    through_image = usage(cached_image, {"type": "text", "text": "Once more."})
    assert through_image.cache_read_input_tokens == system_prefix
    assert IMAGE_TOKENS < through_image.cache_creation_input_tokens < written.cache_creation_input_tokens
    again = usage(cached_image, {"type": "text", "text": "And again."})
    assert again.cache_read_input_tokens == system_prefix + through_image.cache_creation_input_tokens


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (base64.b64encode(b"this is not a picture at all").decode(), "messages.0.content.1"),
        ("%%% not base64 %%%", "messages.0.content.1"),
    ],
)
def test_bad_image_data_is_a_400_naming_the_block(client: anthropic.Anthropic, data: str, says: str) -> None:
    bad = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    for call in (answer, count):
        with pytest.raises(anthropic.BadRequestError) as caught:
            call(client, user(QUESTION, bad))
        assert says in caught.value.message


def test_a_model_without_a_projector_refuses_images(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="smollm2-135m-instruct", max_tokens=4, messages=user(image(1), QUESTION))
    assert "messages.0.content.0" in caught.value.message and "image" in caught.value.message


def test_placeholders_break_prefix_reuse_at_a_different_image() -> None:
    text = [1, 2, 3, 4]
    a = placeholders(b"a" * 16, 0, IMAGE_TOKENS)
    b = placeholders(b"b" * 16, 0, IMAGE_TOKENS)
    assert all(token < 0 for token in a + b) and a != b and a[0] != b[0]
    assert placeholders(b"a" * 16, 0, IMAGE_TOKENS) == a and placeholders(b"a" * 16, 1, IMAGE_TOKENS) != a
    after = [5, 6, 7, 8]
    held = text + a + after
    shapes = PassShapes(LocalEngineSettings(kv_cache_type="f16"))
    image_end = len(text) + IMAGE_TOKENS
    passes = Passes([len(text), image_end, len(held)],
                    [shapes.kind(0, len(text)), shapes.kind(len(text), image_end, image=True), shapes.kind(image_end, len(held))])
    assert reusable(held, passes, text + b + after, passes) == len(text)
    longer = passes.copy()
    longer.add(len(held) + 1, shapes.kind(len(held), len(held) + 1))
    assert reusable(held, passes, held + [9], longer) == len(held)
    # an image is read whole: a prompt that differs in its tail reuses the image only as a whole pass
    assert reusable(held, passes, text + a + [9, 9, 9, 9], passes) == image_end


# --- a parked background generation puts its image back (in-process: one slot, reached directly) ---


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEngine]:
    """Its own engine, not the shared server: preemption needs a scheduler of one slot, driven directly
    (as tests/test_priority.py does)."""
    mmproj = write_projector(tmp_path_factory.mktemp("vision") / "projector.gguf", default_model_path())
    models = [ModelSettings(id="v", context_window=2048, mmproj=str(mmproj))]
    engine = LocalEngine(models, LocalEngineSettings(parallel=1, max_queue=4, prompt_cache_mib=0))
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


def _job(engine: LocalEngine, events: queue.Queue, background: bool, max_tokens: int, messages: list) -> Job:
    params = rq.MessageCreateParams.model_validate(
        {"model": "v", "max_tokens": max_tokens, "temperature": 0, "messages": messages}
    )
    generation = Generation(engine.models()[0], params, validate.normalize(params), "wrk_a", background=background)
    tag = "batch" if background else "chat"
    return Job(
        prompt=engine._prompt(generation, False),
        max_tokens=max_tokens,
        sampling=Sampling(temperature=0),
        stops=[],
        workspace="wrk_a",
        emit=lambda event: events.put((tag, event)),
        background=background,
    )


def test_a_preempted_generation_refills_its_image(one_slot: LocalEngine, caplog: pytest.LogCaptureFixture) -> None:
    """The interactive request takes the only slot; the batch one, resumed, decodes its image again (its
    slot kept less than the prompt up to the image) and ends with all its tokens."""
    caplog.set_level(logging.INFO, "missive.engine")
    scheduler = one_slot.schedulers["v"]
    events: queue.Queue = queue.Queue()
    counting = [{"role": "user", "content": [image(9), {"type": "text", "text": COUNTING[0]["content"]}]},
                COUNTING[1]]
    batch = _job(one_slot, events, True, 30, counting)
    assert batch.prompt.images and batch.prompt.images[0].length == IMAGE_TOKENS
    scheduler.submit(batch)
    seen: list[tuple[str, object]] = []
    while sum(tag == "batch" and isinstance(event, Delta) for tag, event in seen) < 5:
        seen.append(events.get(timeout=60))
    before = metrics.PREEMPTIONS.labels(model="v")._value.get()
    scheduler.submit(_job(one_slot, events, False, 4, user(image(10), QUESTION)))
    finished: dict[str, Finished] = {}
    while len(finished) < 2:
        tag, event = events.get(timeout=120)
        assert not isinstance(event, BaseException), event
        if isinstance(event, Finished):
            finished[tag] = event
    assert metrics.PREEMPTIONS.labels(model="v")._value.get() == before + 1
    assert finished["batch"].stop_reason == "max_tokens" and finished["batch"].usage.output_tokens == 30
    assert finished["chat"].usage.output_tokens >= 1
    resumed = re.search(r"resumed in slot 0: (\d+) tokens reused", caplog.text)
    assert resumed is not None and int(resumed.group(1)) <= batch.prompt.images[0].start


def test_the_engine_refuses_undecodable_bytes_itself() -> None:
    """The last guard, behind media/images.py's checks: Pillow's decode, named by the block's path."""
    with pytest.raises(ApiError) as caught:
        vision._decode(ImageInput("messages.3.content.1", b"\x89PNG\r\n\x1a\n but then nothing"))
    assert caught.value.status == 400 and caught.value.message.startswith("messages.3.content.1: ")
    pixels, width, height = vision._decode(ImageInput("-", base64.b64decode(png(1))))
    assert (width, height) == (40, 30) and len(pixels) == 40 * 30 * 3
