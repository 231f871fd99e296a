"""The Anthropic wire format as data: requests, responses, stream events, errors. Pure, no I/O."""
