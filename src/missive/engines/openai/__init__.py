"""The OpenAI-compatible remote engine: vLLM, SGLang, llama-server, Ollama, LM Studio, any /v1/chat/completions."""
