"""Tests of focal_al.nets: shapes, descriptor, argument and input-size errors."""
import pytest
import torch

from focal_al.nets import FCN, EDConvNet


@pytest.mark.parametrize("cls", [EDConvNet, FCN])
@pytest.mark.parametrize("depth", [2, 4])
def test_forward_shapes(cls, depth):
    net = cls(in_channels=3, n_classes=3, width=2, depth=depth).eval()
    side = 2**depth * 2
    logits, desc = net(torch.rand(2, 3, side, side + 2**depth))
    assert logits.shape == (2, 3, side, side + 2**depth)
    assert desc.shape == (2, net.descriptor_dim)
    assert net.size_multiple == 2**depth


def test_paper_widths_and_descriptor_dim():
    net = EDConvNet(width=4, depth=4)
    assert net.encoder.widths == [4, 8, 16, 32, 32]
    assert net.descriptor_dim == 32  # 8w, the bottleneck of Fig. 2
    assert EDConvNet(width=4, depth=2).descriptor_dim == 16


def test_descriptor_is_mean_of_bottleneck():
    net = EDConvNet(width=2, depth=2).eval()
    x = torch.rand(1, 3, 16, 16)
    bottleneck = net.encoder(x)[-1]
    _, desc = net(x)
    torch.testing.assert_close(desc, bottleneck.mean(dim=(2, 3)))


@pytest.mark.parametrize("cls", [EDConvNet, FCN])
def test_input_size_not_multiple_is_a_clear_error(cls):
    net = cls(width=2, depth=2)
    with pytest.raises(ValueError, match=r"multiple of 2\*\*depth = 4.*H=18"):
        net(torch.rand(1, 3, 18, 16))


def test_wrong_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="has 1 channels; the network expects 3"):
        EDConvNet(width=2, depth=2)(torch.rand(1, 1, 16, 16))


def test_invalid_arguments_are_collected():
    with pytest.raises(ValueError, match=r"'n_classes' must be an int >= 2.*'width' must be an int >= 1"):
        EDConvNet(n_classes=1, width=0)


def test_fcn_has_no_skip_concatenation():
    net = FCN(width=2, depth=2)
    # Each decoder block reads only the upsampled map: its input width is the previous output width.
    first_convs = [block[0].in_channels for block in net.decoder]
    assert first_convs == [8, 2]  # widths 2, 4, 8: 8 -> 2, then 2 -> 2
