"""The UNet of the Kaggle TGS-salt kernel ("UNet with depth", start_neurons 16), in Keras 3.

`build_model` follows the kernel's layer sequence exactly; `make_unet` wraps it with an
input of a chosen size and channel count. Only the training/export side imports this
module, so TensorFlow stays off the device.
"""
from __future__ import annotations

from runtime.errors import UserError

DEFAULT_SIZE = 128
DEFAULT_CHANNELS = 1
DEFAULT_START_NEURONS = 16
# Four 2x poolings: the spatial size must divide by 2**4 for the skips to line up.
SIZE_MULTIPLE = 16


def check_input_shape(height: int | None, width: int | None, channels: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if value is not None and (value <= 0 or value % SIZE_MULTIPLE):
            raise UserError(
                f"input {name} {value} is not a positive multiple of {SIZE_MULTIPLE} "
                f"(the UNet pools four times); use e.g. {max(SIZE_MULTIPLE, round((value or 0) / SIZE_MULTIPLE) * SIZE_MULTIPLE)}"
            )
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 (gray) or 3 (colour), not {channels}")


def build_model(input_layer, start_neurons: int):
    """The kernel's network, layer for layer (Conv2D/MaxPool/Dropout/Conv2DTranspose)."""
    from keras import layers

    # He initialisation (not Keras' Glorot default) for the ReLU convolutions: the network has no
    # BatchNorm, and with Glorot it sits for ~1000 images predicting all-background before it
    # learns. Initialisation changes no layer, shape or activation of the kernel's network.
    def conv_pair(x, filters):
        x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same", kernel_initializer="he_normal")(x)
        return layers.Conv2D(filters, (3, 3), activation="relu", padding="same", kernel_initializer="he_normal")(x)

    # Contracting path: 128 -> 64 -> 32 -> 16 -> 8 at the default size.
    skips = []
    x = input_layer
    for depth, dropout in zip((1, 2, 4, 8), (0.25, 0.5, 0.5, 0.5)):
        conv = conv_pair(x, start_neurons * depth)
        skips.append(conv)
        x = layers.MaxPooling2D((2, 2))(conv)
        x = layers.Dropout(dropout)(x)

    x = conv_pair(x, start_neurons * 16)  # the middle

    # Expanding path: deconv, then [deconv, conv] as in the kernel, Dropout 0.5, two convs.
    for depth, skip in zip((8, 4, 2, 1), reversed(skips)):
        deconv = layers.Conv2DTranspose(start_neurons * depth, (3, 3), strides=(2, 2), padding="same")(x)
        x = layers.concatenate([deconv, skip])
        x = layers.Dropout(0.5)(x)
        x = conv_pair(x, start_neurons * depth)

    return layers.Conv2D(1, (1, 1), padding="same", activation="sigmoid")(x)


def make_unet(
    height: int | None = DEFAULT_SIZE,
    width: int | None = DEFAULT_SIZE,
    channels: int = DEFAULT_CHANNELS,
    start_neurons: int = DEFAULT_START_NEURONS,
):
    """A Keras model for NHWC float input in [0, 1]; None height/width = any multiple of 16."""
    check_input_shape(height, width, channels)
    if start_neurons < 1:
        raise UserError(f"start_neurons must be >= 1, not {start_neurons}")
    import keras

    input_layer = keras.Input(shape=(height, width, channels), name="image")
    output_layer = build_model(input_layer, start_neurons)
    return keras.Model(input_layer, output_layer, name=f"unet_s{start_neurons}")
