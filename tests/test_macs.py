from tflite_io.macs import op_macs


def test_conv2d_macs_hand_computed():
    # 1x112x112x32 output, 3x3 kernel over 3 input channels: 112*112*32*3*3*3
    assert op_macs("CONV_2D", [(1, 224, 224, 3), (32, 3, 3, 3), (32,)], [(1, 112, 112, 32)]) == 112 * 112 * 32 * 27


def test_grouped_conv_divides_input_channels():
    # 8 input channels, kernel sees 2 per group -> 4 groups
    assert op_macs("CONV_2D", [(1, 4, 4, 8), (8, 1, 1, 2), None], [(1, 4, 4, 8)]) == 4 * 4 * 8 * 2


def test_depthwise_macs():
    assert op_macs("DEPTHWISE_CONV_2D", [(1, 56, 56, 64), (1, 3, 3, 64)], [(1, 56, 56, 64)]) == 56 * 56 * 64 * 9


def test_fully_connected_macs():
    assert op_macs("FULLY_CONNECTED", [(1, 1280), (1000, 1280), (1000,)], [(1, 1000)]) == 1280 * 1000


def test_transpose_conv_macs():
    # inputs: output_shape, weights [Cout, kh, kw, Cin], input
    assert op_macs("TRANSPOSE_CONV", [(4,), (16, 3, 3, 8), (1, 10, 10, 8)], [(1, 20, 20, 16)]) == 10 * 10 * 8 * 3 * 3 * 16


def test_batch_matmul_macs_with_and_without_adjoint():
    assert op_macs("BATCH_MATMUL", [(2, 5, 7), (2, 7, 3)], [(2, 5, 3)]) == 2 * 5 * 3 * 7
    assert op_macs("BATCH_MATMUL", [(2, 7, 5), (2, 7, 3)], [(2, 5, 3)], adj_x=True) == 2 * 5 * 3 * 7


def test_elementwise_and_pooling_count_output_elements():
    assert op_macs("ADD", [(1, 8, 8, 4), (1, 8, 8, 4)], [(1, 8, 8, 4)]) == 256
    assert op_macs("MAX_POOL_2D", [(1, 8, 8, 4)], [(1, 4, 4, 4)]) == 64
    assert op_macs("SPLIT", [(), (1, 8)], [(1, 4), (1, 4)]) == 8
