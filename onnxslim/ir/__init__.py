"""Loading, saving and inspecting models; helpers over the onnx-graphsurgeon graph."""
