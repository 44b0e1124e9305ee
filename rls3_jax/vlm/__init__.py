"""The vision-language models: Flax CLIP / NegCLIP (`clip/`) and big_vision-style PaliGemma (`paligemma/`),
one folder each; shared by both, Hugging Face checkpoint reading (`hf_weights`) and the attention softmax
(`attention`); and the scripted weak-spot VLM (`weakspot`)."""
