"""Models: the tiny ModernBERT masked LM, Hugging Face / LoRA / quantized loading, tokenizer, adapter merge."""
