"""Rewrites of an exported ONNX graph that hold at the one image size it was traced at.

EfficientNet-Lite's TF "SAME" padding is traced as arithmetic on the input's shape feeding a ``Pad`` before
each strided conv. At a fixed image size those pads are constants: ``fold_static_padding`` computes them once
and moves them into the conv's own ``pads``, leaving a graph of convs, clips and adds. Quantization needs
that (a ``Pad`` between two quantized convs keeps them apart), and ONNX Runtime runs it faster.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def fold_static_padding(model, image_size: int):
    """``model`` (an ``onnx.ModelProto``, changed in place and returned) with every ``Pad`` feeding a
    ``Conv`` folded into that conv, its pads evaluated at ``image_size``, and the nodes left unused removed."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    pads = [node for node in model.graph.node if node.op_type == "Pad"]
    if not pads:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for node in pads:
        probe.graph.output.append(helper.make_tensor_value_info(node.input[1], onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    values = session.run([n.input[1] for n in pads], {name: np.zeros((1, 3, image_size, image_size), np.float32)})
    consumers = defaultdict(list)
    for node in model.graph.node:
        for tensor in node.input:
            consumers[tensor].append(node)
    for node, value in zip(pads, values):
        begin, end = value.reshape(2, -1).tolist()  # ONNX pads: all begins, then all ends (N, C, H, W)
        users = consumers[node.output[0]]
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        if len(users) != 1 or users[0].op_type != "Conv" or mode != b"constant" or any(node.input[2:]):
            continue  # not the zero padding of one conv: left as it is
        if begin[:2] != [0, 0] or end[:2] != [0, 0]:
            continue
        conv = users[0]
        own = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        for attribute in [a for a in conv.attribute if a.name in ("pads", "auto_pad")]:
            conv.attribute.remove(attribute)
        conv.attribute.append(helper.make_attribute("pads", [p + q for p, q in zip(own, begin[2:] + end[2:])]))
        conv.input[0] = node.input[0]
    _remove_unused(model)
    return model


def _remove_unused(model) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    needed = {output.name for output in model.graph.output}
    kept = []
    for node in reversed(list(model.graph.node)):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    unused = [init for init in model.graph.initializer if init.name not in needed]
    for init in unused:
        model.graph.initializer.remove(init)
