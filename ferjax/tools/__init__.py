"""The command-line tools, one module each (`python -m ferjax.<tool>` runs ferjax/tools/<tool>.py):
main (train), evaluate, predict, export, compare, convert, preview, ablate. All follow the one
convention of ferjax/tools/flags.py."""
