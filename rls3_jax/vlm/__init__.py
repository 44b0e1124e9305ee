"""The vision-language models: Flax CLIP / NegCLIP and big_vision-style PaliGemma."""
