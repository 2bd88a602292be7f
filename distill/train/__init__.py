"""`distill train`: supervised fine-tuning of students on filtered traces (TRL's SFTTrainer, peft, accelerate)."""
