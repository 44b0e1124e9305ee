"""PaliGemma after big_vision's `proj/paligemma`: the Flax model (`model`), checkpoint loading (`weights`), the
model's inputs (`inputs`), the embedded default's closed-vocabulary tokenizer (`tokenizer`), the train step
(`train`), batched greedy decoding (`decode`), the loop's learner (`learner`), detection answers in PaliGemma's
location-token format (`detection`) and the embedded default's base pretraining (`pretrain`)."""
