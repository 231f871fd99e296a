"""Claude Code through the Claude Agent SDK for Python (`claude-agent-sdk`), which bundles its own CLI,
often newer than npm's. Run with the clients' venv; ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY come from
the environment. Prints one JSON object: what the SDK reported.
"""

from __future__ import annotations

import json
import sys

import anyio
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ResultMessage, TextBlock, query


async def main(prompt: str) -> dict:
    options = ClaudeAgentOptions(tools=[], max_turns=2, extra_args={"bare": None})
    texts: list[str] = []
    result: dict = {}
    async for message in query(prompt=prompt, options=options):
        if isinstance(message, AssistantMessage):
            texts += [block.text for block in message.content if isinstance(block, TextBlock)]
        elif isinstance(message, ResultMessage):
            result = {"is_error": message.is_error, "subtype": message.subtype, "result": message.result,
                      "usage": message.usage}  # fmt: skip
    return {"texts": texts, "result": result}


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "Reply with one word: hello.")))
