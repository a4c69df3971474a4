"""The `satsang` subcommands, one module per part of the data path (registered on `satsang.app.app`).

A new command goes in the module of its part of the path (a new module is added to the
imports in `satsang/cli.py`, whose order is the order of `satsang --help`). Each command
is a thin layer over a library call: it parses options, calls the library inside
`one_line_errors()`, and prints what `satsang/render` makes of the result.
"""
