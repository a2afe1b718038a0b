"""Runtime layer: everything that executes a model with ONNX Runtime.

``session`` builds sessions (providers, threads, optimization level, >2 GB models), ``feeds``
generates inputs, ``data`` streams ``--data``/``--calibration-data`` sources, ``parity``
compares two models output by output, and ``bench`` measures latency. Every function takes an
``onnx.ModelProto`` (or a path), never an onnx-graphsurgeon graph.
"""
