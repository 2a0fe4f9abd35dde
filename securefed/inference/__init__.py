"""Use a trained model: load a run or an export, generate with its chat template (streaming), and
serve it behind an OpenAI-compatible chat-completions route."""
