"""Training: LoRA SFT on the extracted failures (TRL + PEFT), the mixing of several training
files, padding-free attention, several processes through accelerate, experiment trackers."""
