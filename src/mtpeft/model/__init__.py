"""The model: a backbone (with a PEFT method applied) plus one head per task."""
