"""Fine-tuning: LoRA / prefix-tuning SFT on our own knowledge, contrastive retriever tuning, answer evaluation."""
