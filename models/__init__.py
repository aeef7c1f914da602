"""The finsent GPT classifier: tokenizer, network, data, training, evaluation and the inference API."""
