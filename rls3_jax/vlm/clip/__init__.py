"""CLIP / NegCLIP: the Flax model (`model`), Hugging Face checkpoint loading (`weights`) and a checkpoint's own
image preprocessing and tokenizer (`inputs`), the contrastive loss and train step (`contrastive`), the embedded
default's closed-vocabulary tokenizer (`tokenizer`), the loop's learner (`learner`) and the embedded default's
base pretraining (`pretrain`)."""
