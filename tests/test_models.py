"""Models API (spec §12): ModelInfo shape, pagination the SDK can follow, aliases, 404."""

from __future__ import annotations

import anthropic
import httpx
import pytest

LOCAL = [
    "smollm2-135m-instruct", "smollm2-small", "smollm2-think", "smollm2-hermes", "smollm2-qwen3-coder", "smollm2-glm45",
    "smollm2-llama3", "smollm2-mistral-v3", "smollm2-mistral-v11", "smollm2-harmony", "smollm2-vision",
]
LISTED = [*LOCAL, *(f"claude-{model}" for model in LOCAL)]  # the ids Claude Code's model discovery keeps


def test_list_models_shape(client: anthropic.Anthropic) -> None:
    page = client.models.list(limit=100)  # more models than the default page of 20
    ids = [model.id for model in page.data]
    assert ids == LISTED
    default = page.data[0]
    assert default.type == "model" and default.display_name == "SmolLM2 135M Instruct"
    assert default.max_input_tokens == 4096 and default.max_tokens == 64000
    assert default.capabilities is not None
    assert default.capabilities.image_input.supported is False
    assert default.created_at.year == 1970


def test_pagination_cursors_are_valid(client: anthropic.Anthropic, http: httpx.Client) -> None:
    first = http.get("/v1/models", params={"limit": 1}).json()
    assert first["has_more"] is True and first["first_id"] == first["last_id"] == "smollm2-135m-instruct"
    second = http.get("/v1/models", params={"limit": 1, "after_id": first["last_id"]}).json()
    assert [m["id"] for m in second["data"]] == ["smollm2-small"] and second["has_more"] is True
    back = http.get("/v1/models", params={"limit": 1, "before_id": second["first_id"]}).json()
    assert [m["id"] for m in back["data"]] == ["smollm2-135m-instruct"] and back["has_more"] is False
    # the SDK's auto-pagination follows the cursors
    assert [m.id for m in client.models.list(limit=3)] == LISTED
    assert [m.id for m in client.beta.models.list(limit=3)] == LISTED


def test_bad_limit_names_the_field(http: httpx.Client) -> None:
    response = http.get("/v1/models", params={"limit": 0})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "limit: Input should be greater than or equal to 1"


@pytest.mark.parametrize(("requested", "resolved"), [("smollm2-small", "smollm2-small"), ("tiny", "smollm2-small"),
                                                      ("claude-opus-4-7", "smollm2-135m-instruct"),
                                                      ("claude-smollm2-small", "smollm2-small")])
def test_retrieve_resolves_aliases(client: anthropic.Anthropic, requested: str, resolved: str) -> None:
    assert client.models.retrieve(requested).id == resolved


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("gpt-5")
    assert caught.value.type == "not_found_error"
    assert caught.value.message.endswith("model: gpt-5") or "model: gpt-5" in str(caught.value)


def test_an_alias_serves_and_echoes(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert message.model == "tiny"
