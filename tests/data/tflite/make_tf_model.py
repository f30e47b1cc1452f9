"""Write `tf_conv_int8.tflite`: a model made by TensorFlow's own converter, fully int8 (post-training, calibrated).

This is the "made elsewhere" case: a Keras CNN (8x8x1 -> Conv2D(4, 3x3, ReLU) -> MaxPool -> Dense(10)) converted
by `tf.lite.TFLiteConverter` with int8 inputs and outputs, plus `tf_conv_reference.npz` holding `x` and the
float Keras model's outputs `y`. TensorFlow does not belong in the project venv; use a scratch venv:

    python3.11 -m venv /tmp/tflvenv && /tmp/tflvenv/bin/pip install tensorflow-cpu numpy   # tensorflow-cpu 2.21.0
    /tmp/tflvenv/bin/python tests/data/tflite/make_tf_model.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

HERE = Path(__file__).parent


def main() -> None:
    tf.keras.utils.set_random_seed(3)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1), name="image"),
            tf.keras.layers.Conv2D(4, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(10),
        ]
    )
    rng = np.random.default_rng(11)
    calib = rng.uniform(0, 1, (128, 8, 8, 1)).astype(np.float32)
    x = rng.uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (HERE / "tf_conv_int8.tflite").write_bytes(converter.convert())
    np.savez(HERE / "tf_conv_reference.npz", x=x, y=model(x).numpy().astype(np.float32))


if __name__ == "__main__":
    main()
