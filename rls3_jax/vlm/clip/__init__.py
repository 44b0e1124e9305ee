"""CLIP / NegCLIP: the Flax model (`model`), Hugging Face checkpoint loading (`weights`), the contrastive loss
and train step (`contrastive`), the closed-vocabulary tokenizer of the embedded default (`tokenizer`), the
loop's learner (`learner`) and the embedded default's base pretraining (`pretrain`)."""
