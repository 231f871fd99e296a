"""The Anthropic-compatible remote engine: the Claude API, another Missive node, any /v1/messages server."""
