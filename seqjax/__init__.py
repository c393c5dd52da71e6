"""seqjax: sequence models from the vanilla RNN to the Transformer, in JAX/Flax."""
