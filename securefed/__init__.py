"""securefed: privacy-first federated fine-tuning of LLM LoRA adapters."""

__version__ = "0.1.0"
