"""What training and serving share: the class list, decoding and the preprocessing contract,
white-cell localisation, the not-a-cell check, the out-of-distribution statistics,
temperature scaling and the network builders. Imports nothing of ``app`` or
``model_training``; nothing here imports TensorFlow except ``network`` and ``keras_model``,
which build Keras models."""
