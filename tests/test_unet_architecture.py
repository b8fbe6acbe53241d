"""The model is the TGS-salt kernel's UNet, layer for layer."""
import pytest

from build_engine.unet import make_unet
from runtime.errors import UserError


def layer_sequence(model):
    """(class name, key config) for each layer, in the graph's topological order."""
    rows = []
    for layer in model.layers:
        kind = layer.__class__.__name__
        cfg = layer.get_config()
        if kind in ("Conv2D", "Conv2DTranspose"):
            rows.append((kind, cfg["filters"], tuple(cfg["kernel_size"]), tuple(cfg["strides"]), cfg["padding"], cfg["activation"]))
        elif kind == "MaxPooling2D":
            rows.append((kind, tuple(cfg["pool_size"])))
        elif kind == "Dropout":
            rows.append((kind, cfg["rate"]))
        else:
            rows.append((kind,))
    return rows


def expected_sequence(sn):
    conv = lambda f: ("Conv2D", f, (3, 3), (1, 1), "same", "relu")  # noqa: E731
    rows = [("InputLayer",)]
    for depth, rate in zip((1, 2, 4, 8), (0.25, 0.5, 0.5, 0.5)):
        rows += [conv(sn * depth), conv(sn * depth), ("MaxPooling2D", (2, 2)), ("Dropout", rate)]
    rows += [conv(sn * 16), conv(sn * 16)]
    for depth in (8, 4, 2, 1):
        rows += [("Conv2DTranspose", sn * depth, (3, 3), (2, 2), "same", "linear"), ("Concatenate",), ("Dropout", 0.5),
                 conv(sn * depth), conv(sn * depth)]
    rows.append(("Conv2D", 1, (1, 1), (1, 1), "same", "sigmoid"))
    return rows


@pytest.mark.parametrize("sn", [16, 8])
def test_layers_match_the_kernel(sn):
    model = make_unet(128, 128, 1, sn)
    assert layer_sequence(model) == expected_sequence(sn)


def test_relu_convolutions_use_he_initialisation():
    model = make_unet(64, 64, 1, 4)
    for layer in model.layers:
        if layer.__class__.__name__ == "Conv2D" and layer.get_config()["activation"] == "relu":
            assert layer.get_config()["kernel_initializer"]["class_name"] == "HeNormal"


def test_concatenate_puts_deconv_first_then_the_skip():
    model = make_unet(64, 64, 1, 4)
    for layer in model.layers:
        if layer.__class__.__name__ == "Concatenate":
            first, second = (t._keras_history.operation for t in layer.input)
            assert first.__class__.__name__ == "Conv2DTranspose"
            # The skip is the second conv of the matching contracting block, same filters and size.
            assert second.__class__.__name__ == "Conv2D" and second.filters == first.filters
            assert layer.input[0].shape == layer.input[1].shape


def test_default_model_size_and_shape():
    model = make_unet()
    assert model.input_shape == (None, 128, 128, 1)
    assert model.output_shape == (None, 128, 128, 1)
    assert model.count_params() == 2_158_417  # the article's figure for start_neurons 16


def test_size_and_channels_are_parameters():
    model = make_unet(96, 64, 3, 4)
    assert model.input_shape == (None, 96, 64, 3)
    assert model.output_shape == (None, 96, 64, 1)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(height=100, width=128), "multiple of 16"),
    (dict(height=128, width=0), "multiple of 16"),
    (dict(channels=2), "channels"),
    (dict(start_neurons=0), "start_neurons"),
])
def test_bad_parameters_are_user_errors(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        make_unet(**kwargs)
