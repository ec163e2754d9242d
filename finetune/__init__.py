"""Fine-tuning (LoRA / prefix-tuning SFT, contrastive retriever tuning): filled in by the finetune issue."""
