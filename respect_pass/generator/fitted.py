"""Constants of the synthetic graph generator, fitted to the model zoo.

Written by tools/fit_generator.py on 2026-11-25 from 15 zoo models:
    densenet121_224_int8
    densenet169_224_int8
    densenet201_224_int8
    inceptionv3_299_int8
    mobilenet_224_int8
    mobilenetv2_224_int8
    resnet101_224_int8
    resnet101v2_224_int8
    resnet152_224_int8
    resnet152v2_224_int8
    resnet152v2_299_int8
    resnet50_224_int8
    resnet50_299_int8
    resnet50v2_299_int8
    vgg16_224_int8
Do not edit by hand: rerun ``python tools/fit_generator.py --write`` (see its docstring for each constant).
"""

FIT_DATE = "2026-11-25"
RESOLUTIONS = {
    "dense": ((224, 1.0),),
    "inception": ((299, 1.0),),
    "mobile": ((224, 1.0),),
    "resnet": ((224, 0.625), (299, 0.375)),
    "all": ((224, 0.733), (299, 0.267)),
}
NUM_CLASSES = ((1000, 1.0),)
PARAMS_LOG_SLOPE = 0.6039
PARAMS_LOG_SIGMA = 0.2793
PARAMS_LOG_INTERCEPT = {"all": -0.12, "dense": -1.1015, "inception": 0.2143, "mobile": -0.974, "resnet": 0.5998}
PARAMS_MIB_RANGE = (0.5, 64.0)
LEVEL_FRACTIONS = {
    "dense": {1: 0.008, 2: 0.086, 3: 0.161, 4: 0.422, 5: 0.324},
    "inception": {1: 0.025, 2: 0.025, 3: 0.246, 4: 0.459, 5: 0.246},
    "mobile": {1: 0.088, 2: 0.131, 3: 0.163, 4: 0.432, 5: 0.187},
    "resnet": {1: 0.019, 2: 0.114, 3: 0.182, 4: 0.557, 5: 0.128},
    "all": {1: 0.044, 2: 0.112, 3: 0.182, 4: 0.485, 5: 0.178},
}
BLOCK_WIDTHS = {
    "dense": {2: 176, 3: 336, 4: 784, 5: 1168},
    "inception": {3: 288, 4: 768, 5: 2048},
    "mobile": {2: 24, 3: 32, 4: 64, 5: 160},
    "resnet": {2: 256, 3: 512, 4: 1024, 5: 2048},
    "all": {2: 256, 3: 512, 4: 1024, 5: 2048},
}
CONV_WIDTHS = {"all": {1: 64, 2: 64, 3: 128, 4: 256, 5: 512}}
DENSE_GROWTH = 32
DENSE_LAYERS_PER_BLOCK = (6, 14)
RESIDUAL_VARIANTS = (("mbv2", 0.143), ("v1", 0.429), ("v2", 0.429))
LAYERED_FANIN = (0.5039, 0.1598, 0.0839, 0.0858, 0.0833, 0.0833)
LAYERED_SINGLE_MIX = (
    ("CONV_2D", 0.66),
    ("DEPTHWISE_CONV_2D", 0.0511),
    ("MUL", 0.0955),
    ("ADD", 0.0955),
    ("AVERAGE_POOL_2D", 0.0071),
    ("MAX_POOL_2D", 0.0309),
    ("LOGISTIC", 0.02),
    ("RELU6", 0.02),
    ("RELU", 0.02),
)
LAYERED_MULTI_MIX = (("ADD", 0.6923), ("MUL", 0.0), ("CONCATENATION", 0.3077))
HEAD_STYLES = (("conv", 0.067), ("fc", 0.933))

# Design choices, not fitted (the zoo has no counterpart): activation of squeeze-excite blocks
# (EfficientNet swish = LOGISTIC + MUL, MobileNetV3 hard-swish, written RELU6 because HARD_SWISH does not map to the Edge TPU, MnasNet ReLU fused into the conv),
# second model output (none / a second classifier on the same features / an auxiliary head on a
# mid-network block, placed last in the execution order) and a leading QUANTIZE (requantised input).
SE_ACTIVATIONS = (("swish", 0.5), ("hswish", 0.3), ("relu", 0.2))
TWO_OUTPUTS = (("", 0.8), ("shared", 0.1), ("aux", 0.1))
QUANTIZE_INPUT = 0.1
