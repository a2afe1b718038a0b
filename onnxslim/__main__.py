"""``python -m onnxslim`` runs the CLI."""

from onnxslim.cli import main

main()
